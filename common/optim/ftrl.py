"""FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
Algorithm 1), per coordinate: state z and n, the weight the closed-form proximal solution
w = 0 if |z| <= l1 else -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2), with alpha the
learning rate. These are the formulas and parameters of VW's --ftrl, with one change in how
they are computed: each division by alpha is a multiplication by 1 / alpha (`INV_LR`), which
leaves one division and one square root per update (the two operations of the learning loop
that wait on the same unit) and rounds differently only in the last bit."""
from __future__ import annotations

import math

import numba

from common.optim.params import BETA, INV_LR, L1, L2
from common.optim.state import LAYOUTS
from common.optim.state import ftrl_weights as weights  # noqa: F401  (re-exported)

COLUMNS = LAYOUTS["ftrl"].columns
NONNEG = LAYOUTS["ftrl"].nonneg


@numba.njit(cache=True, inline="always")
def _closed_form(z, sqrt_n, hp):
    if abs(z) <= hp[L1]:
        return 0.0
    return -(z - math.copysign(hp[L1], z)) / ((hp[BETA] + sqrt_n) * hp[INV_LR] + hp[L2])


@numba.njit(cache=True, inline="always")
def weight(st, r, hp):
    return _closed_form(st[r, 0], math.sqrt(st[r, 1]), hp)


@numba.njit(cache=True, inline="always")
def update(st, r, g, hp):
    w = weight(st, r, hp)
    n = st[r, 1]
    n_new = n + g * g
    sigma = (math.sqrt(n_new) - math.sqrt(n)) * hp[INV_LR]
    st[r, 0] += g - sigma * w
    st[r, 1] = n_new


# The worker's kernel keeps two scratch columns beside z and n in its float64 block: the row's
# current weight and sqrt(n), recomputed only when the row changes. An event then reads each
# weight instead of deriving it (a sqrt and a division), and an update takes one sqrt instead of
# three. They are the very operations `weight` and `update` perform on the same values, so the
# results are the same bit for bit (tests/unit/test_optim.py checks it).
W, SQRT_N = 2, 3  # scratch columns; LAYOUTS["ftrl"].scratch == 2


@numba.njit(cache=True, inline="always")
def begin(st, r, hp):
    """Fill row r's scratch columns from its z and n (once per row per batch)."""
    st[r, SQRT_N] = math.sqrt(st[r, 1])
    st[r, W] = _closed_form(st[r, 0], st[r, SQRT_N], hp)


@numba.njit(cache=True, inline="always")
def cached_weight(st, r, hp):
    return st[r, W]


@numba.njit(cache=True, inline="always")
def cached_update(st, r, g, hp):
    """`update` on a block with scratch columns, keeping them current."""
    n_new = st[r, 1] + g * g
    sqrt_new = math.sqrt(n_new)
    sigma = (sqrt_new - st[r, SQRT_N]) * hp[INV_LR]
    z = st[r, 0] + (g - sigma * st[r, W])
    st[r, 0] = z
    st[r, 1] = n_new
    st[r, SQRT_N] = sqrt_new
    st[r, W] = _closed_form(z, sqrt_new, hp)
