"""FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
Algorithm 1), per coordinate: state z and n, the weight the closed-form proximal solution
w = 0 if |z| <= l1 else -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2), with alpha the
learning rate. These are the formulas and parameters of VW's --ftrl."""
from __future__ import annotations

import math

import numba
import numpy as np

from common.optim.params import BETA, L1, L2, LR

COLUMNS = ("z", "n")
NONNEG = ("n",)


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


def weights(cols: dict[str, np.ndarray], spec) -> np.ndarray:
    """The weights of rows from their z and n (float32, whole arrays): the shard's copy, which it
    publishes to replicas."""
    z, n = cols["z"], cols["n"]
    denom = (spec.beta + np.sqrt(n)) / spec.learning_rate + spec.l2
    return np.where(np.abs(z) <= spec.l1, 0.0,
                    -(z - np.sign(z) * spec.l1) / denom).astype(np.float32)
