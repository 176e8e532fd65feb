"""Crossed features: per event, every combination of one value from each of several fields.

Why whole-array arithmetic: a cross of multi-valued fields yields a different number of ids per
event; repeat/cumsum over the entries of the batch computes all of them without visiting
events one by one.
"""
from __future__ import annotations

import numpy as np

from common.hashing import combine, hash_string

CROSS_TAG = hash_string("\x00cross")


def cross_ids(parts: list[tuple[np.ndarray, np.ndarray] | None]) -> tuple[np.ndarray, np.ndarray]:
    """All combinations, per event, of one value from each part (rows must be non-decreasing).

    A part is the (rows, ids) of one field, None when the field is absent from the batch (then
    there is no cross). For a pair of parts A and B, an event with a values of A and b of B
    yields a*b crossed ids, A's value varying slowest.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.uint64))
    if any(p is None for p in parts):
        return empty
    rows, ids = parts[0]
    ids = ids ^ np.uint64(CROSS_TAG)  # a cross never equals a plain feature of its fields
    for rows_b, ids_b in parts[1:]:
        if rows.size == 0 or rows_b.size == 0:
            return empty
        n = int(max(rows.max(), rows_b.max())) + 1
        count_b = np.bincount(rows_b, minlength=n)
        start_b = np.concatenate(([0], np.cumsum(count_b)[:-1]))
        reps = count_b[rows]  # partners of each A entry
        a_idx = np.repeat(np.arange(rows.size), reps)
        block_start = np.repeat(np.cumsum(reps) - reps, reps)
        offset = np.arange(a_idx.size) - block_start
        b_idx = start_b[rows[a_idx]] + offset
        rows, ids = rows[a_idx], combine(ids[a_idx], ids_b[b_idx])
    return rows, ids
