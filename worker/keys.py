"""The unique slots a batch touches, and each feature entry's index into them.

`np.unique(..., return_inverse=True)` argsorts every entry. For models up to 2**24 slots, a
scratch table indexed by slot, kept across batches, does the same job in one compiled pass that
reads the table once per entry (`kernel.first_seen`), then a sort of the much shorter list of
distinct slots (`Kernel.unique_slots`). Larger models use `np.unique`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.sharding import slots_of
from worker.models.prebuilt import kernel

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

    def index(self, ids: np.ndarray) -> BatchKeys:
        slots = slots_of(ids, self.bits)
        if self._table is None or slots.size >= np.iinfo(np.int32).max:
            uniq, inverse = np.unique(slots, return_inverse=True)
            return BatchKeys(uniq, inverse.ravel())
        # slots < 2**24: as int64 the same numbers, which index the table
        uniq, inverse = kernel().unique_slots(slots.view(np.int64), self._table)
        return BatchKeys(uniq.view(np.uint64), inverse)
