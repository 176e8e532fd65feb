"""A source's small durable state in one file, replaced atomically: the acknowledged position
and the journaled pushes in flight (`worker.journal`) together, so that no crash falls between
acknowledging a batch and dropping its journal record. Written with write, fsync, rename."""
from __future__ import annotations

import os
from pathlib import Path

import threading

import msgpack

from common.errors import DeltapsError
from worker.journal import JournalRecord


class Sidecar:
    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what

    def load(self) -> dict:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise DeltapsError(f"{self.path} is damaged ({exc}): it holds {self.what}") from None

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(state, use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)


class SidecarJournal:
    """The journal half of `worker.journal.AcknowledgedSource` for a source whose state is a
    `Sidecar` (a followed file, the ingest socket): records by push number in `_journal`,
    written with the source's position by its `_save` under `_lock` (the trainer journals on
    one thread and acknowledges on another)."""

    sidecar: Sidecar
    _lock: threading.Lock
    _journal: dict[int, bytes]

    def journal(self, record: JournalRecord) -> None:
        with self._lock:
            self._journal[record.push_no] = record.encode()
            self._save()

    def journaled(self) -> list[JournalRecord]:
        return [JournalRecord.decode(self._journal[k], str(self.sidecar.path))
                for k in sorted(self._journal)]
