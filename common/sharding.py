"""Feature id -> slot -> shard: one pure, vectorized function shared by every reader and writer.

Invariants of every message that carries keys:
- keys are slots (uint64, ``< 2**bits``), unique and sorted ascending;
- shard ``k`` of ``n`` owns the slots with ``slot % n == k`` and stores slot ``s`` at local row
  ``s // n`` (so a shard's rows are ``slots[k::n]`` of the whole model);
- a request is never sent to a shard with an empty slice of keys.
"""
from __future__ import annotations

import numpy as np


def slots_of(ids: np.ndarray, bits: int) -> np.ndarray:
    """The hashing trick: the low `bits` bits of a feature id."""
    return np.asarray(ids, dtype=np.uint64) & np.uint64((1 << bits) - 1)


def shard_of(slots: np.ndarray, n_shards: int) -> np.ndarray:
    slots = np.asarray(slots, dtype=np.uint64)
    if n_shards & (n_shards - 1) == 0:  # a power of two: the low bits (uint64 % is slow)
        return (slots & np.uint64(n_shards - 1)).view(np.int64)
    return (slots % np.uint64(n_shards)).astype(np.int64)


def local_rows(slots: np.ndarray, n_shards: int) -> np.ndarray:
    """Row of each slot in its shard's arrays."""
    return (np.asarray(slots, dtype=np.uint64) // np.uint64(n_shards)).astype(np.int64)


def shard_size(bits: int, n_shards: int, shard: int) -> int:
    """How many slots shard `shard` owns."""
    total = 1 << bits
    return total // n_shards + (1 if shard < total % n_shards else 0)


def split_by_shard(keys: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """Indices into sorted unique `keys` for each shard; each part stays sorted.

    Returns one index array per shard (possibly empty; callers skip empty ones).
    """
    shard = shard_of(keys, n_shards)
    if n_shards <= 16:  # a few linear scans beat a sort
        return [np.flatnonzero(shard == k) for k in range(n_shards)]
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(n_shards + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n_shards)]
