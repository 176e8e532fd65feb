"""FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
Algorithm 1), per coordinate: state z and n, the weight the closed-form proximal solution
w = 0 if |z| <= l1 else -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2), with alpha the
learning rate. These are the formulas and parameters of VW's --ftrl."""
from __future__ import annotations

import math

import numba

from common.optim.params import BETA, L1, L2, LR
from common.optim.state import LAYOUTS
from common.optim.state import ftrl_weights as weights  # noqa: F401  (re-exported)

COLUMNS = LAYOUTS["ftrl"].columns
NONNEG = LAYOUTS["ftrl"].nonneg


@numba.njit(cache=True, inline="always")
def weight(st, r, hp):
    z = st[r, 0]
    if abs(z) <= hp[L1]:
        return 0.0
    return -(z - math.copysign(hp[L1], z)) / ((hp[BETA] + math.sqrt(st[r, 1])) / hp[LR] + hp[L2])


@numba.njit(cache=True, inline="always")
def update(st, r, g, hp):
    w = weight(st, r, hp)
    n = st[r, 1]
    n_new = n + g * g
    sigma = (math.sqrt(n_new) - math.sqrt(n)) / hp[LR]
    st[r, 0] += g - sigma * w
    st[r, 1] = n_new

