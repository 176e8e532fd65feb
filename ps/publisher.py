"""Coalesces the rows a shard changed and turns them into sequenced absolute-value updates.

Rows changed by many pushes within one publish window go out once, with the values they hold
at flush time. Each (shard, model) stream has its own sequence number; a replica that sees a
gap knows it missed something and re-fetches a snapshot. Absolute values make a duplicate or
re-applied update harmless.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from common.messages import Heartbeat, Update
from common.unique import sorted_unique
from ps.store import ModelShard

MAX_KEYS_PER_UPDATE = 1 << 20


class Coalescer:
    """The rows changed since the last flush, per model, and each stream's sequence number.

    A push only marks its rows; `flush` (once per publish window) reads their values then, so
    a hot row pushed a hundred times in a window is published once, and the ack's sequence
    number names the update that will carry the push. Keeping marking and publishing apart
    is what lets pushes go on at full rate while replicas get a bounded stream."""

    def __init__(self, shard: int, epoch: int, stores: dict[str, ModelShard],
                 seqs: dict[str, int] | None = None):
        self.shard = shard
        self.epoch = epoch
        self.stores = stores
        self.seq = {name: (seqs or {}).get(name, 0) for name in stores}
        # per model: (rows, their weights as the push left them, or None) of each marked push
        self.pending: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {
            name: [] for name in stores}
        self.marked_at: dict[str, float] = {}  # per model: when its oldest pending row was marked
        # metrics hook: seconds from a model's oldest pending change to its publication
        self.observe_delay: Callable[[float], None] = lambda _seconds: None

    def mark(self, model: str, rows: np.ndarray, weights: np.ndarray | None = None) -> int:
        """Record changed rows; returns the sequence number that will publish them.

        `weights`: the rows' weights the change left (the push's checked values). When it is
        the only change of a window, they are what the window publishes: every change of a row
        is marked, so no other can have come between, and the store is not read again."""
        if not self.pending[model]:
            self.marked_at[model] = time.monotonic()
        self.pending[model].append((rows, weights))
        return self.seq[model] + 1

    def has_pending(self) -> bool:
        return any(self.pending.values())

    def flush(self) -> list[Update]:
        updates = []
        for model, parts in self.pending.items():
            if not parts:
                continue
            store = self.stores[model]
            # one push's rows are already unique and sorted; several need merging
            if len(parts) == 1:
                rows, weights = parts[0]
            else:
                rows, weights = sorted_unique(np.concatenate([r for r, _ in parts])), None
            if weights is None:
                weights = store.weights_of(rows)
            self.pending[model] = []
            self.observe_delay(time.monotonic() - self.marked_at.pop(model, time.monotonic()))
            for start in range(0, rows.size, MAX_KEYS_PER_UPDATE):
                stop = start + MAX_KEYS_PER_UPDATE
                self.seq[model] += 1
                updates.append(Update(model, self.shard, self.epoch, self.seq[model],
                                      store.slots_of_rows(rows[start:stop]),
                                      weights[start:stop]))
        return updates

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.shard, self.epoch, dict(self.seq))
