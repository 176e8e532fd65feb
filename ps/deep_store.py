"""A shard's slice of a deep model: sparse rows and dense rows of (w, m, v, t), checked pushes.

The layout is `common.deep.DeepLayout`'s: every key, a sparse slot or one of the dense rows after
them, is a row of h0 weights, their Adam moments m and v, and a step count t. A shard stores
the keys it owns (``key % shards``) densely, as one float32 block of (rows, 3 h0 + 1) laid out
as the wire's rows are, so a pull is one gather of whole rows and a push one gather, one add and
one scatter; the dense rows start at the model's fixed initial values, the sparse rows at 0.
The same interface as `ps.store.ModelShard`: the shard node, its log, snapshots and publisher
treat both alike. What a replica is published is `w`, one (h0,) vector per key.
"""
from __future__ import annotations

import numpy as np

from common.config import ModelSpec
from common.deep import DeepLayout
from common.errors import InvalidValue
from ps.store import CheckedPush, ModelShard, RowState, owned_rows

PARTS = ("w", "m", "v", "t")


class DeepModelShard(RowState):
    """One deep model's rows on this shard (see the module docstring). A push is checked
    whole before anything changes: keys, shape (k, 3 h0 + 1), |delta| <= `max_delta`, moments
    v and step counts t stay >= 0, and nothing overflows.

    A row is one contiguous run of 3 h0 + 1 floats (772 bytes at h0 = 64), so gathering or
    scattering it is one copy; kept as four arrays (w, m, v, t), every row cost four gathers
    and four scatters, each a cache miss, and a pull a fifth copy to join them. `state` names
    the parts as views into the block: w (rows, h0), m, v, and t (rows,), which is what
    snapshots hold, one array per part as before."""

    def __init__(self, spec: ModelSpec, shard: int, n_shards: int, max_delta: float = 1e6):
        self.spec = spec
        self.shard = shard
        self.n_shards = n_shards
        self.max_delta = max_delta
        self.layout = DeepLayout.of(spec)
        total = self.layout.total_keys
        self.size = total // n_shards + (1 if shard < total % n_shards else 0)
        h = self.layout.width
        self.columns = tuple(f"{p}{j}" for p in "wmv" for j in range(h)) + ("t",)
        # every page written now, at start, not by a first push's scatter (`ModelShard` says why)
        self._block = np.empty((self.size, self.layout.row_width), np.float32)
        self._block.fill(0.0)
        self.state = self._parts(self._block)
        keys = self.layout.dense_keys()
        mine = keys[keys % np.uint64(n_shards) == np.uint64(shard)]
        initial = self.layout.rows_of_dense(self.layout.initial_dense())
        self.state["w"][(mine // np.uint64(n_shards)).astype(np.int64)] = \
            initial[(mine - np.uint64(self.layout.slots)).astype(np.int64)]
        self.pushes = 0
        self.pulls = 0

    def _parts(self, block: np.ndarray) -> dict[str, np.ndarray]:
        """w, m, v (rows, h0) and t (rows,) of a block of rows, as views."""
        h = self.layout.width
        return {"w": block[:, :h], "m": block[:, h:2 * h], "v": block[:, 2 * h:3 * h],
                "t": block[:, 3 * h]}

    @property
    def weights(self) -> np.ndarray:
        """(size, h0): what replicas hold of this shard (a view: strided)."""
        return self.state["w"]

    def rows_for(self, keys: np.ndarray) -> np.ndarray:
        if keys.ndim != 1:
            raise InvalidValue("keys must be one-dimensional")
        if keys.size and int(keys[-1]) >= self.layout.total_keys:
            raise InvalidValue(f"key {int(keys[-1])} is outside deep model {self.spec.name!r} "
                               f"({self.layout.slots} slots and {self.layout.dense_rows} "
                               "dense rows)")
        return owned_rows(keys, self.shard, self.n_shards)

    def pull(self, keys: np.ndarray) -> np.ndarray:
        """The state of `keys`, float32 (len(keys), 3 h0 + 1): w, m, v, t."""
        rows = self.rows_for(keys)
        self.pulls += 1
        return self._block.take(rows, axis=0)

    def check_push(self, keys: np.ndarray, deltas: np.ndarray) -> CheckedPush:
        """Validate a push and work out its new values; raises InvalidValue naming the problem
        and changes nothing (deltas are finite: the wire codec checked that)."""
        rows = self.rows_for(keys)
        h = self.layout.width
        want = (keys.size, self.layout.row_width)
        if deltas.shape != want:
            raise InvalidValue(f"deltas of shape {list(deltas.shape)} for {keys.size} keys: deep "
                               f"model {self.spec.name!r} (hidden {list(self.layout.hidden)}) "
                               f"needs {list(want)}: w, m, v of width {h} and t")
        if deltas.size and (deltas.max() > self.max_delta or deltas.min() < -self.max_delta):
            i, j = np.argwhere(np.abs(deltas) > self.max_delta)[0]
            raise InvalidValue(f"delta {float(deltas[i, j]):g} of {self.columns[j]} for key "
                               f"{int(keys[i])} exceeds max_delta = {self.max_delta:g}")
        # whole-block reductions first, the part and element that failed only when one did
        block = self._block.take(rows, axis=0)
        with np.errstate(over="ignore"):  # an overflow is refused below, by name
            block += deltas
        new = self._parts(block)
        if not rows.size:
            return CheckedPush(rows, new, block)
        if block[:, 2 * h:].min() < 0:
            part = "v" if new["v"].min() < 0 else "t"
            i = int(np.argwhere(new[part] < 0)[0][0])
            raise InvalidValue(f"deltas would make {part} of key {int(keys[i])} negative; "
                               f"{part} must stay >= 0")
        if not (np.isfinite(block.max()) and np.isfinite(block.min())):
            part = next(p for p in PARTS if not np.isfinite(new[p]).all())
            raise InvalidValue(f"deltas would make {part} overflow to inf")
        return CheckedPush(rows, new, block)

    def apply(self, push: CheckedPush) -> None:
        self._block[push.rows] = push.block
        self.pushes += 1


def make_store(spec: ModelSpec, shard: int, n_shards: int, max_delta: float = 1e6):
    """The store of a model of any kind."""
    if spec.kind == "deep":
        return DeepModelShard(spec, shard, n_shards, max_delta)
    return ModelShard(spec, shard, n_shards, max_delta)
