"""The optimizer math, written once: one module per optimizer, and a registry by name.

Workers run the per-coordinate updates event by event in a compiled kernel
(`worker.models.kernel`); shards only add the deltas workers push and, where the weight is not a
state column (FTRL), recompute it with the module's vectorized `weights`. Each module declares:

- `COLUMNS`: the per-row state a pull returns and a push changes, in wire order;
- `NONNEG`: the columns that can never be negative (sums of squares, step counts), which a
  shard keeps >= 0 whatever a push says;
- `weight(st, r, hp)` and `update(st, r, g, hp)`: numba functions on row `r` of a float64 state
  block, with the hyper-parameters `hp` (`hyper_parameters`);
- `weights(cols, spec)`: the weights of rows from their float32 state columns (numpy).

`adam` is the dense Adam of dense parameter blocks; a sparse linear model uses `lazy_adam`,
since dense Adam moves every row at every step.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from common.optim import adagrad, adam, ftrl, lazy_adam, sgd
from common.optim.params import hyper_parameters

# the order gives each sparse optimizer its code in the worker kernel's dispatch
SPARSE: dict[str, ModuleType] = {"ftrl": ftrl, "adagrad": adagrad, "sgd": sgd,
                                 "lazy_adam": lazy_adam}
DENSE: dict[str, ModuleType] = {"adam": adam}
CODES = {name: code for code, name in enumerate(SPARSE)}

__all__ = ["SPARSE", "DENSE", "CODES", "get", "hyper_parameters", "nonneg_index"]


def get(name: str) -> ModuleType:
    """The sparse optimizer module called `name`."""
    try:
        return SPARSE[name]
    except KeyError:
        raise KeyError(f"no sparse optimizer {name!r}; known: {sorted(SPARSE)}") from None


def nonneg_index(module: ModuleType) -> np.ndarray:
    """Positions in `COLUMNS` of the columns that must stay >= 0."""
    return np.array([module.COLUMNS.index(c) for c in module.NONNEG], np.int64)
