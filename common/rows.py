"""A 2-D float32 array seen as a 1-D array of its rows, one element a row.

Why: numpy gathers and scatters 4- and 8-byte elements on fast paths, but indexes a 2-D array's
rows value by value. The state rows a pull brings back and the deltas a push sends (two float32
columns for FTRL) are split between shards and put back together every batch, and a shard
gathers and scatters the rows of its store on every pull and push; moved as one uint64 each,
those rows cost a fraction of what they cost as pairs of floats (`make bench` times the whole).
Rows wider than 8 bytes move as raw bytes of their width.
"""
from __future__ import annotations

import numpy as np

_FAST = {1: np.dtype(np.uint32), 2: np.dtype(np.uint64)}


def row_dtype(width: int) -> np.dtype:
    """A dtype of `width` float32s' bytes: a row of that many columns as one element."""
    return _FAST.get(width, np.dtype((np.void, 4 * width)))


def as_rows(block: np.ndarray) -> np.ndarray:
    """The rows of a C-contiguous (n, width >= 1) float32 array as n elements (a view)."""
    return block.view(row_dtype(block.shape[1])).reshape(block.shape[0])


def of_rows(rows: np.ndarray, width: int) -> np.ndarray:
    """The (n, width) float32 array of n row elements (a view): `as_rows` undone."""
    return rows.view(np.float32).reshape(rows.size, width)
