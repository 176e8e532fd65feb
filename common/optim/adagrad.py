"""AdaGrad (Duchi, Hazan, Singer, JMLR 2011), diagonal, per coordinate: g += l2 w; g2 += g^2;
w -= lr / (beta + sqrt(g2)) g, then L1 applied proximally (soft threshold by the same step)."""
from __future__ import annotations

import math

import numba

from common.optim.stored import soft_threshold, weight, weights  # noqa: F401  (re-exported)
from common.optim.state import LAYOUTS
from common.optim.params import BETA, L1, L2, LR

COLUMNS = LAYOUTS["adagrad"].columns
NONNEG = LAYOUTS["adagrad"].nonneg


@numba.njit(cache=True, inline="always")
def update(st, r, g, hp):
    w = st[r, 0]
    g = g + hp[L2] * w
    g2 = st[r, 1] + g * g
    step = hp[LR] / (hp[BETA] + math.sqrt(g2))
    w = w - step * g
    st[r, 0] = soft_threshold(w, step * hp[L1])
    st[r, 1] = g2

