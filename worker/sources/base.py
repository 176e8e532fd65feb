"""What every event source shares: counting what was read, and cutting chunks to read sizes.

The trainer asks each `read` for however many events it wants (`worker.trainer.Source`), while
parsers and generators work best on large chunks, where numpy's whole-array work pays off. A
`ChunkedSource` subclass only says how to produce its chunks; cutting them to each read's size
and counting events are done here, the same way for every reader.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from common.features import Batch, concat_batches

log = logging.getLogger("deltaps.sources")

MAX_REPORTED = 20


@dataclass
class SourceStats:
    """What a source has read so far, kept on the source so whoever drives it (the CLI summary,
    the trainer) can report skipped input without the parsers knowing who reads them.

    `examples` keeps only the first MAX_REPORTED malformed lines: a broken file must not flood
    the log or memory, but the user needs a few line numbers to find what to fix.
    """

    events: int = 0
    malformed: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def malformed_line(self, name: str, line: int, reason: str) -> None:
        """Count a skipped line of the input called `name`; log and keep only the first few."""
        self.malformed += 1
        if len(self.examples) < MAX_REPORTED:
            self.examples.append((line, reason))
            log.warning("%s:%d: skipped malformed line: %s", name, line, reason)
            if len(self.examples) == MAX_REPORTED:
                log.warning("%s: further malformed lines are counted but not logged", name)

    def as_dict(self) -> dict:
        return {"events": self.events, "malformed": self.malformed,
                "examples": [list(e) for e in self.examples]}


class ChunkCutter:
    """Cuts a stream of chunks into batches of whatever size each `read` asks for.

    Why a separate piece: chunk size is what makes parsing fast, batch size is what the
    trainer needs, and the two must not constrain each other. Chunks are ``(Batch, aux)``
    pairs where `aux` is None or a per-event array (e.g. true probabilities) cut the same
    way. A batch spanning two chunks is joined with `concat_batches`, so every batch but the
    last has exactly the size asked for.
    """

    def __init__(self, chunks: Iterator[tuple[Batch, np.ndarray | None]], live=lambda: False):
        self._chunks = chunks
        self._live = live  # a live stream: once a read has events, it never waits for more
        self._chunk: Batch | None = None
        self._aux: np.ndarray | None = None
        self._offset = 0

    def _refill(self) -> bool:
        while self._chunk is None or self._offset >= self._chunk.n:
            nxt = next(self._chunks, None)
            if nxt is None:
                self._chunk = None
                return False
            self._chunk, self._aux = nxt
            self._offset = 0
        return True

    def read(self, max_events: int) -> tuple[Batch, np.ndarray | None] | None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        parts: list[Batch] = []
        aux_parts: list[np.ndarray] = []
        need = max_events
        while need > 0:
            drained = self._chunk is None or self._offset >= self._chunk.n
            if drained and parts and self._live():
                break  # a live stream hands over what has arrived instead of waiting
            if not self._refill():
                break
            take = min(need, self._chunk.n - self._offset)
            stop = self._offset + take
            parts.append(self._chunk.slice(self._offset, stop))
            if self._aux is not None:
                aux_parts.append(self._aux[self._offset:stop])
            self._offset, need = stop, need - take
        if not parts:
            return None
        batch = parts[0] if len(parts) == 1 else concat_batches(parts)
        aux = None if not aux_parts else (aux_parts[0] if len(aux_parts) == 1
                                          else np.concatenate(aux_parts))
        return batch, aux


class ChunkedSource:
    """Base of the readers: a subclass yields chunks from `_chunks`; reading is shared.

    Why a base class: every reader must honour the same contract (a read returns at most the
    size asked for, fewer only at the end or on a live input; None once exhausted; events
    counted in `stats`), and it is easiest to keep that true in one place. A subclass with
    per-event extras (the synthetic stream's true probabilities) overrides `_chunks_with_aux`
    and `_on_batch`.
    """

    def __init__(self, name: str):
        self.name = name
        self.stats = SourceStats()
        self.live = False  # set by sources reading a pipe, terminal or socket
        self._cutter = ChunkCutter(self._chunks_with_aux(), lambda: self.live)

    def _chunks(self) -> Iterator[Batch]:
        raise NotImplementedError

    def _chunks_with_aux(self) -> Iterator[tuple[Batch, np.ndarray | None]]:
        """Chunks paired with per-event extras to cut alongside (none by default)."""
        return ((chunk, None) for chunk in self._chunks())

    def _on_batch(self, batch: Batch, aux: np.ndarray | None) -> None:
        """Hook called with every batch read and its extras."""

    def read(self, max_events: int) -> Batch | None:
        """The next at most `max_events` events (fewer only at the end); None when exhausted."""
        got = self._cutter.read(max_events)
        if got is None:
            return None
        batch, aux = got
        self.stats.events += batch.n
        self._on_batch(batch, aux)
        return batch

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Iterate over batches of `batch_size` events (the last may be shorter)."""
        while (batch := self.read(batch_size)) is not None:
            yield batch

    def close(self) -> None:
        """Release the input; a no-op for sources that hold nothing open."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
