"""Plain SGD per coordinate: w -= lr (g + l2 w), then L1 soft-thresholding by lr l1."""
from __future__ import annotations

import math

import numba
import numpy as np

from common.optim.params import L1, L2, LR

COLUMNS = ("w",)
NONNEG: tuple[str, ...] = ()


@numba.njit(cache=True, inline="always")
def weight(st, r, hp):
    return st[r, 0]


@numba.njit(cache=True, inline="always")
def update(st, r, g, hp):
    w = st[r, 0]
    w = w - hp[LR] * (g + hp[L2] * w)
    st[r, 0] = math.copysign(max(abs(w) - hp[LR] * hp[L1], 0.0), w)


def weights(cols: dict[str, np.ndarray], spec) -> np.ndarray:
    return cols["w"]
