"""Dense Adam (Kingma and Ba, ICLR 2015, Algorithm 1) for dense parameter blocks, where every
parameter takes every step and one step count t serves the block. Not for sparse rows: a linear
model naming "adam" is refused at spec load in favour of `lazy_adam`, since dense Adam would
move every row of the model at every step (its moments decay even where the gradient is 0)."""
from __future__ import annotations

import math

import numba

from common.optim.params import BETA1, BETA2, EPS, L2, LR

COLUMNS = ("w", "m", "v")
NONNEG = ("v",)


@numba.njit(cache=True, nogil=True)
def step(w, m, v, g, t, hp):
    """One Adam step, in place, of the block `w` (1-D: pass a flat view of a larger block) with
    gradient `g` at step number `t` (1 for the first step)."""
    c1 = 1.0 - hp[BETA1] ** t
    c2 = 1.0 - hp[BETA2] ** t
    for i in range(w.size):
        gi = g[i] + hp[L2] * w[i]
        m[i] = hp[BETA1] * m[i] + (1.0 - hp[BETA1]) * gi
        v[i] = hp[BETA2] * v[i] + (1.0 - hp[BETA2]) * gi * gi
        w[i] -= hp[LR] * (m[i] / c1) / (math.sqrt(v[i] / c2) + hp[EPS])
