"""What each sparse optimizer keeps per row, apart from its update math: the state columns, the
ones that can never be negative, and the weight a row's columns give. numpy only, no numba, so
a shard (which adds deltas and publishes weights but runs no optimizer) and a worker using a
prebuilt kernel start without compiling or loading numba. The optimizer modules (`ftrl`, ...)
take their declarations from here.

The order of `LAYOUTS` gives each optimizer its code in the worker kernel's dispatch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ftrl_weights(cols: dict[str, np.ndarray], spec) -> np.ndarray:
    """FTRL's weights of rows from their z and n (float32, whole arrays): the closed form of
    `common.optim.ftrl.weight`, vectorized; what the shard publishes to replicas. The same
    float32 operations in the same order as
    ``where(|z| <= l1, 0, -(z - sign(z) l1) / ((beta + sqrt(n)) * (1 / alpha) + l2))``, done in place
    in two buffers (a push computes it for every row it changes). With l1 = 0, z - sign(z) l1
    is z itself, bit for bit."""
    z, n = cols["z"], cols["n"]
    denom = np.sqrt(n, dtype=np.float32)
    denom += spec.beta
    denom *= 1.0 / spec.learning_rate
    denom += spec.l2
    if spec.l1:
        w = np.sign(z, dtype=np.float32)
        w *= spec.l1
        np.subtract(z, w, out=w)
    else:
        w = np.array(z, dtype=np.float32)
    np.negative(w, out=w)
    w /= denom
    w[np.abs(z) <= spec.l1] = 0.0
    return w


def stored_weights(cols: dict[str, np.ndarray], spec) -> np.ndarray:
    """The weight is a state column of its own (SGD, AdaGrad, lazy Adam)."""
    return cols["w"]


@dataclass(frozen=True)
class Layout:
    """One optimizer's per-row state: `columns` in wire order (what a pull returns and a push
    changes), `nonneg` the columns a shard keeps >= 0 whatever a push says (sums of squares,
    step counts), `weights(cols, spec)` the weights of rows from their float32 columns, and
    `scratch` how many float64 columns the worker's kernel keeps beside `columns` for the rows
    it learns (FTRL: the current weight and sqrt(n); never sent)."""

    name: str
    columns: tuple[str, ...]
    nonneg: tuple[str, ...]
    weights: object  # (cols: dict[str, np.ndarray], spec: OptimizerSpec) -> np.ndarray
    scratch: int = 0

    def nonneg_index(self) -> np.ndarray:
        """Positions in `columns` of the columns that must stay >= 0."""
        return np.array([self.columns.index(c) for c in self.nonneg], np.int64)


LAYOUTS: dict[str, Layout] = {
    "ftrl": Layout("ftrl", ("z", "n"), ("n",), ftrl_weights, scratch=2),
    "adagrad": Layout("adagrad", ("w", "g2"), ("g2",), stored_weights),
    "sgd": Layout("sgd", ("w",), (), stored_weights),
    "lazy_adam": Layout("lazy_adam", ("w", "m", "v", "t"), ("v", "t"), stored_weights),
}


def layout(name: str) -> Layout:
    """The state layout of the sparse optimizer called `name`."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"no sparse optimizer {name!r}; known: {sorted(LAYOUTS)}") from None
