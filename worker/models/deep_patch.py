"""Adding a deep worker's own pushes to a pulled state that misses them, in one compiled pass.

Why compiled: a deep row is `row_width` values wide and every batch pulls every dense row, so
the trainer's generic patch (search the push's keys, gather the hits, add, scatter back) moves
each patched row three times through temporaries. Both key arrays are sorted and unique, so
one merge walk finds the shared keys and adds each row in place, in float32 as NumPy does: the
same additions in the same order, so the same bits.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def add_missed(state, slots, applied, number, keys, deltas):
    """``state[i] += deltas[j]`` where ``slots[i] == keys[j]`` and the shard of that row had
    not applied push `number` (``applied[i] < number``). `slots` and `keys` sorted, unique."""
    i, j = 0, 0
    width = state.shape[1]
    while i < slots.size and j < keys.size:
        if slots[i] < keys[j]:
            i += 1
        elif slots[i] > keys[j]:
            j += 1
        else:
            if applied[i] < number:
                for c in range(width):
                    state[i, c] += deltas[j, c]
            i += 1
            j += 1


def patch_own(own, slots: np.ndarray, state: np.ndarray, applied: np.ndarray) -> np.ndarray:
    """`worker.trainer.Trainer._patch_own` for deep models: `own` holds (push number, keys,
    deltas) in push order; returns `state`, patched in place."""
    for number, keys, deltas in own:
        if keys.size:
            add_missed(state, slots, applied, number, keys, deltas)
    return state
