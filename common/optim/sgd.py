"""Plain SGD per coordinate: w -= lr (g + l2 w), then L1 soft-thresholding by lr l1."""
from __future__ import annotations

import numba

from common.optim.stored import soft_threshold, weight, weights  # noqa: F401  (re-exported)
from common.optim.state import LAYOUTS
from common.optim.params import L1, L2, LR

COLUMNS = LAYOUTS["sgd"].columns
NONNEG = LAYOUTS["sgd"].nonneg


@numba.njit(cache=True, inline="always")
def update(st, r, g, hp):
    w = st[r, 0]
    w = w - hp[LR] * (g + hp[L2] * w)
    st[r, 0] = soft_threshold(w, hp[LR] * hp[L1])

