"""Lazy Adam for sparse rows (the sparse-layer optimizer of Twitter's DeepBird; TensorFlow's
LazyAdamOptimizer): Adam (Kingma and Ba, ICLR 2015, Algorithm 1) applied only to the rows an
event touches. Each row keeps its own step count t, so its bias correction counts the steps it
took, not the steps the model took: a rare feature's first step is a full-sized one.
Per coordinate: g += l2 w; t += 1; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). L1 is not part of Adam: a spec
asking for it is refused (`common.config`)."""
from __future__ import annotations

import math

import numba

from common.optim.stored import weight, weights  # noqa: F401  (re-exported)
from common.optim.state import LAYOUTS
from common.optim.params import BETA1, BETA2, EPS, L2, LR

COLUMNS = LAYOUTS["lazy_adam"].columns
NONNEG = LAYOUTS["lazy_adam"].nonneg


@numba.njit(cache=True, inline="always")
def update(st, r, g, hp):
    w = st[r, 0]
    g = g + hp[L2] * w
    t = st[r, 3] + 1.0
    m = hp[BETA1] * st[r, 1] + (1.0 - hp[BETA1]) * g
    v = hp[BETA2] * st[r, 2] + (1.0 - hp[BETA2]) * g * g
    m_hat = m / (1.0 - hp[BETA1] ** t)
    v_hat = v / (1.0 - hp[BETA2] ** t)
    st[r, 0] = w - hp[LR] * m_hat / (math.sqrt(v_hat) + hp[EPS])
    st[r, 1] = m
    st[r, 2] = v
    st[r, 3] = t

