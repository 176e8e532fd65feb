"""The unique slots a batch touches, and each feature entry's index into them.

`np.unique(..., return_inverse=True)` argsorts every entry. For models up to 2**24 slots, a
bitmap of the model's slots, kept across batches, does the same job in two compiled passes over
the entries and one over the bitmap, with no sort (`kernel.index_slots`). Larger models use
`np.unique`.
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
    a bitmap of the model's slots kept across batches (allocated once per model size)."""

    def __init__(self, bits: int):
        self.bits = bits
        dense = bits <= DENSE_MAX_BITS
        words = max(1, (1 << bits) >> 6) if dense else 0
        self._bitmap = np.zeros(words, np.uint64) if dense else None  # a bit per slot
        self._prefix = np.zeros(words, np.int32)  # bits set before each word

    def index(self, ids: np.ndarray) -> BatchKeys:
        if self._bitmap is None or ids.size >= np.iinfo(np.int32).max:
            uniq, inverse = np.unique(slots_of(ids, self.bits), return_inverse=True)
            return BatchKeys(uniq, inverse.ravel())
        uniq, inverse = kernel().unique_slots(ids, self.bits, self._bitmap, self._prefix)
        return BatchKeys(uniq.view(np.uint64), inverse)
