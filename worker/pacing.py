"""Replay a source at a fixed event rate, as a live stream would deliver it.

With a live source the trainer's batches adapt by themselves: each read returns the events
that have arrived since the last one (at least one, at most the batch size asked for). At a
low rate batches are small (fresh weights, quality close to learning event by event); at a
high rate they grow to the maximum (throughput). `PacedSource` makes that measurable with
recorded data.
"""
from __future__ import annotations

import time

from common.features import Batch, concat_batches


class PacedSource:
    """A source replayed at a fixed event rate, so recorded data can stand in for a live
    stream and the trainer's batches adapt to the arrival rate as they would live."""

    live = True

    def __init__(self, source, events_per_s: float, prefetch: int = 4096):
        self.source = source
        self.rate = float(events_per_s)
        self.prefetch = prefetch
        self.stats = getattr(source, "stats", None)
        self._buffer: Batch | None = None
        self._offset = 0
        self._handed = 0
        self._start: float | None = None
        self.batch_sizes: list[int] = []

    def _available(self) -> int:
        if self._buffer is None or self._offset >= self._buffer.n:
            self._buffer, self._offset = self.source.read(self.prefetch), 0
        return 0 if self._buffer is None else self._buffer.n - self._offset

    def read(self, max_events: int) -> Batch | None:
        if not self._available():
            return None
        if self._start is None:  # the clock starts once the first events are in hand
            self._start = time.monotonic()
        while True:
            due = int((time.monotonic() - self._start) * self.rate) + 1 - self._handed
            if due >= 1:
                break
            time.sleep(max(0.0, (self._handed / self.rate) - (time.monotonic() - self._start)))
        parts = []
        want = min(max_events, due)
        while want and self._available():
            take = min(want, self._buffer.n - self._offset)
            parts.append(self._buffer.slice(self._offset, self._offset + take))
            self._offset += take
            want -= take
        batch = parts[0] if len(parts) == 1 else concat_batches(parts)
        self._handed += batch.n
        self.batch_sizes.append(batch.n)
        return batch
