"""Logistic-regression scoring shared by worker (progressive validation) and serving replica.

Both sides score with these functions, so a replica answers exactly what the trainer saw:
`margins` for instances as the featurizer lays them out (field by field, with rows), and
`instance_margins` for instances in CSR form (pre-hashed reads) with the same result.
"""
from __future__ import annotations

import numpy as np

from common.features import Features


def sigmoid(margin: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -35.0, 35.0)))


def margins(features: Features, entry_weights: np.ndarray) -> np.ndarray:
    """Sum of the weights of each event's features (one bincount over the whole batch)."""
    return np.bincount(features.rows, weights=entry_weights, minlength=features.n)


# float32 has a 24-bit significand and float64 a 53-bit one: see instance_margins
_EXACT_SPAN = 2.0 ** (53 - 24)


def instance_margins(offsets: np.ndarray, entry_weights: np.ndarray) -> np.ndarray:
    """Sum of each instance's weights, instances in CSR form (instance i owns entries
    ``offsets[i]:offsets[i + 1]``): the same sums, bit for bit, as `margins` over the same
    entries with rows, without building rows and without bincount's adds into one row after
    another, which wait on each other.

    Why the same: every float32 weight is a whole multiple of the smallest ulp u among the
    nonzero ones, so every partial sum of an instance is too, and is at most k * max|w| for k
    entries. While that is below 2**53 * u, float64 holds every partial sum exactly, and the
    sum is exact in any order; u > min|w| / 2**24 makes ``k * max|w| <= 2**29 * min|w|``
    enough. Then a segmented (pairwise) `np.add.reduceat` equals bincount's sequential sum.
    Weights spanning more than that fall back to bincount in CSR order, which sums each
    instance in the same order as `margins` does."""
    n = offsets.size - 1
    if entry_weights.size == 0:
        return np.zeros(n)
    lengths = np.diff(offsets)
    if entry_weights.dtype == np.float32:
        size = np.abs(entry_weights)
        largest = float(size.max())
        smallest = float(np.min(size, where=size > 0, initial=np.inf))
        if largest == 0.0 or int(lengths.max()) * largest <= _EXACT_SPAN * smallest:
            # over non-empty instances only: their starts strictly increase, and each one's
            # segment runs to the next one's start, which is its own end
            filled = lengths > 0
            sums = np.zeros(n)
            sums[filled] = np.add.reduceat(entry_weights, offsets[:-1][filled], dtype=np.float64)
            return sums
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    return np.bincount(rows, weights=entry_weights, minlength=n)


def logloss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))
