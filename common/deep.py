"""The deep sparse model (DeepBird's): its layout on the shards and its NumPy forward pass.

Shared by shards (layout, initial dense values), replicas (scoring), the worker's TensorFlow
learner (`worker.models.deep`, the same math in TF) and the SavedModel export, so every side
agrees on where each parameter lives and what a prediction is.

The model, for hidden = [h0, h1, ..., hL]:

    a0 = act(sum over the event's features f of E[slot(f)] + b0)     the sparse layer, width h0
    a(l) = act(a(l-1) W(l) + b(l))                                   dense layers, l = 1..L
    p = sigmoid(aL w_out + b_out)

Features are binary ids (a numeric field is bucketized by its transform before hashing), so
each feature's value is 1 and the sparse layer is a sum of rows. DeepBird's online
normalization, V / max|V| + b, exists for valued features (a count worth 1e6 would make a
1e6-sized step); a binary feature's max |V| is 1 and its normalized value is 1 + b_f, a
per-feature constant that the row E[f] absorbs (E[f] (1 + b_f) is just another row). So this
model keeps no normalization state: it would add a column per row and change nothing.

Where the parameters live. Every row, sparse or dense, has the same wire layout of
`row_width` float32 columns: w[0:h0], Adam's m[h0:2h0] and v[2h0:3h0], and the step count t.
- Sparse rows: slot s of the model (``s < 2**bits``) holds E[s]; lazy Adam (each row its own t).
- Dense rows: the keys ``2**bits + j`` (j < dense_rows) hold the dense parameters (b0, then
  W(l) and b(l) per layer, then w_out, b_out), flattened and cut into rows of h0 values, the
  last row padded with zeros. Every batch touches all of them, so lazy Adam on them is Adam.
Both are sharded the one way every key is (``key % shards``, `common.sharding`): sparse rows by
input row. DeepBird found splitting the sparse layer by output column faster, because each
of their shards then computed whole outputs; here shards compute nothing (workers do), so a
column split would only send every touched slot to every shard, and each shard's pull and push
would carry h0 / shards columns of k rows instead of h0 columns of k / shards rows: the same
bytes in more messages. The dense rows spread across shards too, so no shard answers every
batch's dense block alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

DENSE_SEED = 20180101  # dense initial values: a fixed seed, so every shard start agrees
FIRST_BIAS = 0.1  # b0's initial value: keeps ReLU units alive while the rows are all 0


@dataclass(frozen=True)
class DeepLayout:
    """Shapes of a deep model's parameters and where they sit in the rows (the derived sizes
    are cached: a shard checks keys against them at every pull and push)."""

    bits: int
    hidden: tuple[int, ...]
    activation: str = "relu"

    @classmethod
    def of(cls, spec) -> "DeepLayout":
        """`spec`: a `common.config.ModelSpec` of kind "deep"."""
        return cls(spec.bits, tuple(spec.hidden), spec.activation)

    @property
    def width(self) -> int:
        """h0: weights per sparse row (and per dense row)."""
        return self.hidden[0]

    @property
    def row_width(self) -> int:
        """State columns per row on the wire: w, m, v (h0 each) and t."""
        return 3 * self.width + 1

    @cached_property
    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """The dense parameters in their flat order."""
        out: list[tuple[str, tuple[int, ...]]] = [("b0", (self.hidden[0],))]
        for layer in range(1, len(self.hidden)):
            out += [(f"W{layer}", (self.hidden[layer - 1], self.hidden[layer])),
                    (f"b{layer}", (self.hidden[layer],))]
        return out + [("w_out", (self.hidden[-1], 1)), ("b_out", (1,))]

    @cached_property
    def dense_size(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self.shapes)

    @cached_property
    def dense_rows(self) -> int:
        return -(-self.dense_size // self.width)

    @property
    def slots(self) -> int:
        return 1 << self.bits

    @cached_property
    def total_keys(self) -> int:
        """Sparse slots and dense rows: the key space the shards split."""
        return self.slots + self.dense_rows

    def dense_keys(self) -> np.ndarray:
        return np.arange(self.slots, self.total_keys, dtype=np.uint64)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """The dense parameters from their flat vector (views, in `shapes` order)."""
        out, at = [], 0
        for _, shape in self.shapes:
            size = int(np.prod(shape))
            out.append(flat[at:at + size].reshape(shape))
            at += size
        return out

    def dense_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The flat dense vector from the dense rows' weights, (dense_rows, h0)."""
        return np.ascontiguousarray(rows).reshape(-1)[:self.dense_size]

    def rows_of_dense(self, flat: np.ndarray) -> np.ndarray:
        """Dense rows' weights, (dense_rows, h0), from the flat vector (padded with 0)."""
        out = np.zeros(self.dense_rows * self.width, flat.dtype)
        out[:self.dense_size] = flat
        return out.reshape(self.dense_rows, self.width)

    def initial_dense(self) -> np.ndarray:
        """Initial dense parameters, float32: Glorot-uniform matrices, b0 = FIRST_BIAS, other
        biases 0. Sparse rows start at 0 (lazily backed memory); the random matrices break the
        symmetry between units."""
        rng = np.random.default_rng(DENSE_SEED)
        parts = []
        for name, shape in self.shapes:
            if name.startswith("b"):
                parts.append(np.full(shape, FIRST_BIAS if name == "b0" else 0.0).ravel())
            else:
                limit = np.sqrt(6.0 / (shape[0] + shape[1]))
                parts.append(rng.uniform(-limit, limit, shape).ravel())
        return np.concatenate(parts).astype(np.float32)


def activate(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
    raise ValueError(f"unknown activation {name!r}")


def csr_sums(offsets: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per instance, the sum of its rows of `vectors` (instance i owns rows
    ``offsets[i]:offsets[i + 1]``), float64 (n, width): one segmented reduction."""
    n = offsets.size - 1
    sums = np.zeros((n, vectors.shape[1]))
    if vectors.shape[0]:
        filled = np.diff(offsets) > 0
        sums[filled] = np.add.reduceat(vectors, offsets[:-1][filled], axis=0, dtype=np.float64)
    return sums


def row_sums(n: int, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per event, the sum of the `vectors` whose entry belongs to it (`rows[e]`: event of
    entry e, in any order): grouped by event with one stable sort, then `csr_sums`."""
    order = np.argsort(rows, kind="stable")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    return csr_sums(offsets, vectors[order])


def forward(layout: DeepLayout, sparse_sums: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Probabilities (float64) from each event's sum of sparse rows (n, h0) and the flat dense
    parameters: the model's math above, in float64."""
    params = [p.astype(np.float64) for p in layout.split(dense)]
    a = activate(layout.activation, sparse_sums + params[0])
    for layer in range(1, len(layout.hidden)):
        a = activate(layout.activation, a @ params[2 * layer - 1] + params[2 * layer])
    logit = (a @ params[-2])[:, 0] + params[-1][0]
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -35.0, 35.0)))
