"""Checks on pre-hashed instances, shared by the serving client and the replica.

A client that featurizes its own instances sends (row, id) pairs; they are checked before they
leave the client, with the same rules and messages the replica's model applies, so a mistake is
reported where it was made instead of after a round trip. Kept in common/ because a client must
not import server code.
"""
from __future__ import annotations

import numpy as np

from common.errors import InvalidInstance
from common.features import Features


def check_features(n, rows: np.ndarray, ids: np.ndarray, max_instances: int) -> Features:
    """Validate pre-hashed instances given as (row, id) pairs (what a client converts to CSR
    before sending); raises InvalidInstance."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise InvalidInstance(f"n must be an integer, got {type(n).__name__}")
    if not 0 <= n <= max_instances:
        raise InvalidInstance(f"n = {n} is outside [0, {max_instances}]")
    if rows.ndim != 1 or ids.ndim != 1:
        raise InvalidInstance(f"rows and ids must be 1-D, got shapes {list(rows.shape)} "
                              f"and {list(ids.shape)}")
    if rows.size != ids.size:
        raise InvalidInstance(f"rows has {rows.size} entries but ids has {ids.size}")
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise InvalidInstance(f"rows must lie in [0, {n}), got [{int(rows.min())}, "
                              f"{int(rows.max())}]")
    return Features(n, rows, ids)
