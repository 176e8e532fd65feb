"""Keeping one model's copy of one shard current: the Clone pattern's client side.

Plain state machine, no sockets. The replica feeds it updates, snapshots and heartbeats; it
says what to apply and when to ask for a fresh snapshot:

- before the first snapshot, updates are buffered;
- a snapshot at sequence S is applied, then buffered updates newer than S in order;
- an update with seq == current + 1 is applied; an older one is a harmless duplicate;
- a newer one, or a heartbeat announcing a newer seq, means something was missed: the shard is
  marked out of sync (the model stops answering) and a new snapshot is needed;
- an update or heartbeat from another epoch (the shard restarted) means the same.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from common.messages import Update


@dataclass
class ShardSync:
    """Where a replica's copy of one shard of one model stands in the Clone pattern: which
    incarnation and sequence number it holds, and the updates buffered while a snapshot is on
    its way. Plain state, so the protocol's transitions are tested without sockets."""

    shard: int
    epoch: int = -1  # the shard incarnation our copy comes from
    seq: int = -1  # last applied; -1: no snapshot yet
    in_sync: bool = False
    snapshot_wanted: bool = True
    buffered: list[Update] = field(default_factory=list)
    confirmed_at: float = 0.0  # monotonic time we last knew we were current
    gaps: int = 0

    def on_update(self, update: Update) -> list[Update]:
        """Updates to apply now, in order (empty when buffering or duplicate)."""
        if not self.in_sync:
            self.buffered.append(update)
            return []
        if update.epoch != self.epoch:
            self._lost()
            self.buffered.append(update)
            return []
        if update.seq <= self.seq:
            return []
        if update.seq != self.seq + 1:
            self._lost()
            self.buffered.append(update)
            return []
        self.seq = update.seq
        self.confirmed_at = time.monotonic()
        return [update]

    def on_heartbeat(self, epoch: int, seq: int) -> None:
        if not self.in_sync:
            return
        if epoch != self.epoch or seq > self.seq:
            self._lost()
        else:
            self.confirmed_at = time.monotonic()

    def on_snapshot(self, epoch: int, seq: int) -> list[Update]:
        """The snapshot at (`epoch`, `seq`) was applied; returns buffered updates to apply now.

        If the buffer shows a hole after `seq`, stays out of sync and asks again.
        """
        self.epoch, self.seq = epoch, seq
        pending = sorted((u for u in self.buffered if u.epoch == epoch and u.seq > seq),
                         key=lambda u: u.seq)
        self.buffered = []
        apply = []
        for u in pending:
            if u.seq == self.seq:
                continue
            if u.seq != self.seq + 1:
                self.buffered = [v for v in pending if v.seq > self.seq]
                self._lost()
                return apply
            apply.append(u)
            self.seq = u.seq
        self.in_sync = True
        self.snapshot_wanted = False
        self.confirmed_at = time.monotonic()
        return apply

    def _lost(self) -> None:
        self.in_sync = False
        self.snapshot_wanted = True
        self.gaps += 1
