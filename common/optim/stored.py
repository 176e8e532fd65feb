"""For the optimizers whose weight is a state column of its own (column 0, "w"): SGD, AdaGrad
and lazy Adam read it as it is, where FTRL derives it from z and n. Held once here so those
modules declare only what differs, their update."""
from __future__ import annotations

import math

import numba

from common.optim.state import stored_weights as weights  # noqa: F401  (re-exported)


@numba.njit(cache=True, inline="always")
def weight(st, r, hp):
    return st[r, 0]


@numba.njit(cache=True, inline="always")
def soft_threshold(w, t):
    """L1's proximal step: w moved towards 0 by t, and exactly 0 within t of it."""
    return math.copysign(max(abs(w) - t, 0.0), w)

