"""The optimizer math, written once: one module per optimizer, and a registry by name.

Workers run the per-coordinate updates event by event in a compiled kernel
(`worker.models.kernel`); shards only add the deltas workers push and, where the weight is not a
state column (FTRL), recompute it vectorized. What a row holds (`state.LAYOUTS`: columns, the
columns kept >= 0, the weights of rows) is numpy only; each optimizer module adds its numba
functions on row `r` of a float64 state block, with the hyper-parameters `hp`
(`hyper_parameters`): `weight(st, r, hp)` and `update(st, r, g, hp)`, and re-exports its
`COLUMNS`, `NONNEG` and vectorized `weights(cols, spec)`.

Importing this package loads no numba: the optimizer modules (`optim.ftrl`, `optim.get`,
`optim.SPARSE`) are imported on first use, so a shard never loads numba at all.

`adam` is the dense Adam of dense parameter blocks; a sparse linear model uses `lazy_adam`,
since dense Adam moves every row at every step.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from common.optim.params import hyper_parameters
from common.optim.state import LAYOUTS, Layout, layout

# the order gives each sparse optimizer its code in the worker kernel's dispatch
CODES = {name: code for code, name in enumerate(LAYOUTS)}
_MODULES = (*LAYOUTS, "adam")

__all__ = ["SPARSE", "DENSE", "CODES", "LAYOUTS", "Layout", "get", "hyper_parameters",
           "layout", "nonneg_index"]


def get(name: str) -> ModuleType:
    """The sparse optimizer module called `name` (imports numba)."""
    layout(name)  # a clear error for an unknown name
    return importlib.import_module(f"{__name__}.{name}")


def nonneg_index(module: ModuleType) -> np.ndarray:
    """Positions in `COLUMNS` of the columns that must stay >= 0."""
    return np.array([module.COLUMNS.index(c) for c in module.NONNEG], np.int64)


def __getattr__(name: str):
    """`SPARSE`, `DENSE` and the optimizer modules, imported (with numba) when first asked."""
    if name == "SPARSE":
        return {n: get(n) for n in LAYOUTS}
    if name == "DENSE":
        return {"adam": importlib.import_module(f"{__name__}.adam")}
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
