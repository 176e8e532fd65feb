"""The unique slots a batch touches, and each feature entry's index into them.

`np.unique(..., return_inverse=True)` argsorts every entry. For models up to 2**24 slots, a
reusable scratch table indexed by slot does the same job with three scatter/gathers and a sort
of the (much shorter) unique list. The slots index the table as int64 (a view of the uint64
slots): numpy converts a uint64 index array to intp with a copy on every use. Gathers use `take`
and the selection `compress`, which are cheaper than numpy's fancy indexing by an index array or
a boolean mask at the same job.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.sharding import slots_of

DENSE_MAX_BITS = 24


@dataclass
class BatchKeys:
    """Sorted unique slots of a batch, and for each feature entry its index into them."""

    slots: np.ndarray  # uint64
    inverse: np.ndarray  # int32 or int64


class KeyIndexer:
    """Turns a batch's feature ids into its unique slots and each entry's index into them, with
    a scratch table kept across batches (allocated once per model size)."""

    def __init__(self, bits: int):
        self.bits = bits
        # np.zeros is lazily backed by the OS: untouched pages cost nothing
        self._table = np.zeros(1 << bits, np.int32) if bits <= DENSE_MAX_BITS else None
        self._arange = np.arange(0, dtype=np.int32)

    def index(self, ids: np.ndarray) -> BatchKeys:
        slots = slots_of(ids, self.bits)
        if self._table is None or slots.size >= np.iinfo(np.int32).max:
            uniq, inverse = np.unique(slots, return_inverse=True)
            return BatchKeys(uniq, inverse.ravel())
        table = self._table
        index = slots.view(np.int64)  # slots < 2**24: the same numbers
        positions = self._positions(index.size)
        table[index] = positions  # the last entry of each slot wins
        uniq = np.sort(np.compress(table.take(index) == positions, index))
        table[uniq] = positions[:uniq.size]
        return BatchKeys(uniq.view(np.uint64), table.take(index))

    def _positions(self, n: int) -> np.ndarray:
        """0..n-1 as int32, sliced from one array kept across batches."""
        if self._arange.size < n:
            self._arange = np.arange(max(n, 2 * self._arange.size), dtype=np.int32)
        return self._arange[:n]
