"""`deltaps train --follow FILE`: JSON lines learned as they are appended, exactly once.

Like `tail -F`: the file is read to its end, then polled for more; when the name comes to
point at another file (a new inode: rotation) the old one has been read to its end and the new
one is read from its start; a file that shrinks below the offset read (truncation) is read
again from its start.

Exactly once, as for Redis streams (`redis_stream`, `worker.journal`): a batch's position is
(inode, byte offset after its last line), acknowledged by the trainer once every shard holds
its push; the worker's identity is the file's path. Both the acknowledged position and the
journaled push in flight live in one sidecar file beside it (`FILE.deltaps`), replaced
atomically (write, fsync, rename) at each step, so no crash falls between the two. A restart
re-sends the journaled push, then reads on from the acknowledged position, in the rotated-away
file if that is where it lies (found by its inode in the same directory).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.features import Batch, columnarize
from worker.sources.base import MAX_REPORTED, SourceStats
from worker.sources.entries import EventDecoder
from worker.sources.sidecar import Sidecar, SidecarJournal

log = logging.getLogger("deltaps.sources")
POLL_S = 0.2
READ_BYTES = 1 << 22


class FollowSource(SidecarJournal):
    """A growing JSON lines file (see the module docstring)."""

    live = True

    def __init__(self, path: str | Path, until_empty: bool = False, poll_s: float = POLL_S):
        self.path = Path(path).resolve()
        self.name = str(path)
        self.worker_id = f"follow/{self.path}"
        self.sidecar = Sidecar(self.path.with_name(self.path.name + ".deltaps"),
                               f"how far {self.name} was learned")
        self.until_empty, self.poll_s = until_empty, poll_s
        self.stats = SourceStats()
        self._decoder = EventDecoder(self.name)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the sidecar: journaled by one thread, acked by another
        saved = self.sidecar.load()
        self._acked: tuple[int, int] = tuple(saved.get("position") or (0, 0))
        self._journal: dict[int, bytes] = {int(k): v for k, v in saved.get("journal", {}).items()}
        self._file = None
        self._inode = 0
        self._offset = 0  # of the next unread byte of the open file
        self._buffer = b""  # bytes read past `_offset`, not yet a whole line
        self._switch_to = 0  # the inode to read next once the rotated file's tail is taken
        self._position: tuple[int, int] = self._acked

    # --- the sidecar --------------------------------------------------------------------------

    def _save(self) -> None:
        self.sidecar.save({"position": list(self._acked), "journal": self._journal})

    def position(self) -> tuple[int, int]:
        return self._position

    def acknowledge(self, position: Any, push_no: int) -> None:
        with self._lock:
            self._journal.pop(push_no, None)
            if position is not None:
                self._acked = tuple(position)
            self._save()

    # --- reading ------------------------------------------------------------------------------

    def _open_at(self, inode: int, offset: int) -> None:
        """Open the file of `inode` (the path's, or a rotated-away one beside it) at `offset`;
        the path's file from its start when that inode is gone."""
        path = self.path
        if inode and self._stat_inode(self.path) != inode:
            path = next((p for p in self.path.parent.iterdir()
                         if p.is_file() and self._stat_inode(p) == inode), None)
            if path is None:
                log.warning("%s: the file learned up to byte %d is gone; reading %s from its "
                            "start", self.name, offset, self.path)
                path, offset = self.path, 0
        self._file = open(path, "rb")
        self._inode = os.fstat(self._file.fileno()).st_ino
        size = os.fstat(self._file.fileno()).st_size
        if offset > size:
            log.warning("%s is shorter than the %d bytes learned: truncated; reading it from "
                        "its start", path, offset)
            offset = 0
        self._file.seek(offset)
        self._offset, self._buffer = offset, b""

    @staticmethod
    def _stat_inode(path: Path) -> int:
        try:
            return path.stat().st_ino
        except FileNotFoundError:
            return 0

    def read(self, max_events: int) -> Batch | None:
        """At most `max_events` whole lines appended since the last read; waits for more at the
        end, None once stopped (or at the end, with `until_empty`)."""
        while not self._stop.is_set():
            if self._file is None:
                if not self.path.exists():
                    if self.until_empty:
                        return None
                    time.sleep(self.poll_s)
                    continue
                self._open_at(*self._acked)
            newlines = np.flatnonzero(np.frombuffer(self._buffer, np.uint8) == 10)
            if newlines.size < max_events:
                more = self._file.read(READ_BYTES)
                if more:
                    self._buffer += more
                    continue
            if newlines.size:
                cut = int(newlines[min(max_events, newlines.size) - 1]) + 1
                return self._batch(cut)
            if self._rotated():
                continue
            if self.until_empty:
                return None
            time.sleep(self.poll_s)
        return None

    def _rotated(self) -> bool:
        """At the end of the open file: switch files if the name now points at another one
        (its unterminated last line, if any, is taken as a line), or start again if truncated."""
        inode = self._stat_inode(self.path)
        if inode and inode != self._inode:
            if self._buffer:  # taken as a line, then the new file is read
                self._buffer += b"\n"
                self._switch_to = inode
                return True
            self._file.close()
            self._open_at(inode, 0)
            return True
        try:
            size = os.fstat(self._file.fileno()).st_size
        except OSError:
            return False
        if size < self._offset + len(self._buffer):
            log.warning("%s was truncated; reading it from its start", self.name)
            self._file.seek(0)
            self._offset, self._buffer = 0, b""
            return True
        return False

    def _batch(self, cut: int) -> Batch:
        block, self._buffer = self._buffer[:cut - 1], self._buffer[cut:]
        self._offset += cut
        self._position = (self._inode, self._offset)
        if self._switch_to and not self._buffer:
            self._file.close()
            self._open_at(self._switch_to, 0)
            self._switch_to = 0
            self._position = (self._inode, 0)
        lines = [line for line in block.split(b"\n") if line.strip()]
        batch, bad = self._decoder.decode(lines) if lines else (
            columnarize([], with_labels=True), {})
        for reason in bad.values():
            self.stats.malformed += 1
            if self.stats.malformed <= MAX_REPORTED:
                self.stats.examples.append((self._offset, reason))
                log.warning("%s: skipped malformed line in the block ending at byte %d: %s",
                            self.name, self._offset, reason)
        self.stats.events += batch.n
        return batch

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()  # a read still waiting (a trainer that failed mid-run) ends too
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
