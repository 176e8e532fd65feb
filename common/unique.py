"""Distinct values of an integer array, sorted: what `np.unique(a)` returns, by a sort.

Why not `np.unique`: from numpy 2.3 a plain `np.unique` of integers (no return_index,
return_inverse or return_counts) goes through a hash table, many times slower than a sort and a
neighbour comparison on the sizes deltaps sees (thousands to hundreds of thousands of values). The
shard merges the rows of every push in a publish window with it, and featurizing groups numeric
entries by transform with it, so it sits on the training path.
"""
from __future__ import annotations

import numpy as np


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values of 1-d `values`, ascending (a new array)."""
    ordered = np.sort(values)
    if ordered.size < 2:
        return ordered
    first = np.empty(ordered.size, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]
