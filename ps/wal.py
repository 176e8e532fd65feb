"""Write-ahead log of accepted pushes: length-prefixed, checksummed records in rotating segments.

Layout (little-endian): each segment file starts with `MAGIC`, which names the record format,
then holds records

    u32 payload length | u32 crc32(lsn bytes + payload) | u64 lsn | payload

and a payload is one push exactly as the wire codec encodes it: its frames, each prefixed by
its u32 length (`pack_frames`). One codec for the network and the log, so a replayed push is
decoded and validated like a received one. Segments written before the format had a marker
(record format 1: pushes in a codec of their own) are still read for their log positions; one
that holds a record no snapshot covers is a clear error (see `replay`), never a silent skip.

A shard appends a push's record (written through to the kernel) before applying it, so a
killed process loses nothing it acknowledged; `fsync` decides what survives a machine crash:
``always`` fsyncs before acknowledging (group commit: one fsync per batch of requests),
``interval`` every N ms from a background thread (`start_background_sync`: an fsync takes
milliseconds, during which the shard's loop keeps answering), ``never`` leaves it to the OS.

Reading stops at the first record that is short or fails its checksum. At the tail of the
newest segment that is a torn write from a crash: it is reported and cut off. Anywhere else it
is corruption: reported as such, and the bad bytes and any later segments are moved aside to
``corrupt/`` (never replayed, never silently deleted).
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from common.errors import ConfigError

log = logging.getLogger("deltaps.wal")
_HEAD = struct.Struct("<IIQ")
_LEN = struct.Struct("<I")
MAGIC = b"DPWAL002"  # record format 2; format 1 segments have no marker
MAX_RECORD = 1 << 30
FSYNC_POLICIES = ("always", "interval", "never")


def frame_parts(frames: Sequence) -> list:
    """The pieces whose concatenation is `pack_frames(frames)`, uncopied: `append` writes a
    record from them, so a push's arrays go to the log without being joined first."""
    parts = []
    for frame in frames:
        parts += [_LEN.pack(len(frame)), frame]
    return parts


def pack_frames(frames: Sequence) -> bytes:
    """One record's payload: each frame (bytes or a byte memoryview) after its u32 length."""
    return b"".join(frame_parts(frames))


def unpack_frames(payload: bytes) -> list[memoryview]:
    """The frames of a payload made by `pack_frames`, as views into it (no copy)."""
    view, frames, pos = memoryview(payload), [], 0
    while pos < len(view):
        if pos + _LEN.size > len(view):
            raise ValueError(f"frame length at byte {pos} runs past the record's end")
        (length,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if pos + length > len(view):
            raise ValueError(f"frame of {length} bytes at byte {pos} runs past the record's end")
        frames.append(view[pos:pos + length])
        pos += length
    return frames


@dataclass
class ReadReport:
    """What reading the log found: records replayed and any damage."""

    records: int = 0
    torn_bytes: int = 0
    corrupt: list[str] = field(default_factory=list)


def _segment_name(first_lsn: int) -> str:
    return f"wal-{first_lsn:020d}.log"


def _segments(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.glob("wal-*.log"):
        try:
            out.append((int(p.stem[4:]), p))
        except ValueError:
            continue
    return sorted(out)


def _records_start(path: Path, data: bytes, newest: bool, report: ReadReport) -> int:
    """Where a segment's records begin: after MAGIC, at 0 in a format 1 segment (no marker),
    or at the end of one cut short while being created (empty, or part of MAGIC: no records;
    in the newest segment that is a torn write, cut off)."""
    if data[:len(MAGIC)] == MAGIC:
        return len(MAGIC)
    if MAGIC.startswith(data):
        if data and newest:
            report.torn_bytes += len(data)
            log.warning("log %s: torn segment header (%d bytes); cut off", path.name, len(data))
            with open(path, "r+b") as f:
                f.truncate(0)
                os.fsync(f.fileno())
        return len(data)
    return 0


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _continuable(path: Path, segment_bytes: int) -> bool:
    """Whether new records may go at the end of segment `path`: it has room and is empty or
    of the current format (never mix formats in one segment)."""
    size = path.stat().st_size
    if size >= segment_bytes:
        return False
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    return size == 0 or head == MAGIC


class WriteAheadLog:
    """The log of one shard: appends from the shard's loop, fsyncs by policy (possibly from a
    background thread), replay on recovery, and removal of segments a snapshot covers. Every
    acknowledged push is in it before it is applied, which is what makes a restart lossless."""

    def __init__(self, directory: str | Path, fsync: str = "interval",
                 segment_bytes: int = 64 << 20):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync_policy = fsync
        self.segment_bytes = segment_bytes
        self.next_lsn = 1
        self._file = None
        self._size = 0
        self._dirty = False
        self._lock = threading.Lock()  # the open file vs the background syncer
        self._syncer: threading.Thread | None = None
        self._stop_syncing = threading.Event()
        self.observe_fsync: Callable[[float], None] = lambda _seconds: None  # metrics hook

    def _fsync(self, fd: int) -> None:
        start = time.perf_counter()
        os.fsync(fd)
        self.observe_fsync(time.perf_counter() - start)

    # --- reading (recovery) -------------------------------------------------------------------

    def replay(self, after_lsn: int, report: ReadReport) -> Iterator[tuple[int, bytes]]:
        """Yield (lsn, payload) of every intact record with lsn > after_lsn, in order.

        Cuts off a torn tail and moves corruption aside (see module doc). A format 1 segment
        (older release) whose records are all covered (lsn <= after_lsn) is only read for its
        positions; a format 1 record to replay raises ConfigError before anything of it is
        applied. Afterwards the log is positioned to append after the last intact record.
        """
        segments = _segments(self.dir)
        last_lsn = after_lsn
        for i, (_first, path) in enumerate(segments):
            newest = i == len(segments) - 1
            data = path.read_bytes()
            pos = _records_start(path, data, newest, report)
            format_1 = pos == 0
            while pos < len(data):
                rec = self._parse(data, pos)
                if rec is None:
                    if format_1 and pos == 0:
                        raise ConfigError(f"log segment {path} does not start with {MAGIC!r} "
                                          "nor with an intact record: it is not a deltaps log "
                                          "or its head is damaged; move it aside to start "
                                          "without it")
                    self._damaged(path, data, pos, newest, segments[i + 1:], report)
                    break
                lsn, payload, end = rec
                if lsn > after_lsn:
                    if format_1:
                        raise ConfigError(
                            f"log segment {path} was written by an older deltaps (record "
                            f"format 1) and holds record {lsn}, which no snapshot covers; run "
                            "that release once more on this data directory (it recovers and "
                            "snapshots on a clean stop), then start this one")
                    yield lsn, payload
                    report.records += 1
                last_lsn = max(last_lsn, lsn)
                pos = end
            else:
                continue
            break
        self.next_lsn = last_lsn + 1

    @staticmethod
    def _parse(data: bytes, pos: int):
        if pos + _HEAD.size > len(data):
            return None
        length, crc, lsn = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if length > MAX_RECORD or end > len(data):
            return None
        payload = data[pos + _HEAD.size:end]
        if zlib.crc32(payload, zlib.crc32(data[pos + 8:pos + 16])) != crc:
            return None
        return lsn, payload, end

    def _damaged(self, path: Path, data: bytes, pos: int, newest: bool, later, report) -> None:
        bad = len(data) - pos
        if newest:
            report.torn_bytes += bad
            log.warning("log %s: torn record at byte %d (%d bytes) from an interrupted write; "
                        "cut off", path.name, pos, bad)
        else:
            aside = self.dir / "corrupt"
            aside.mkdir(exist_ok=True)
            (aside / f"{path.name}.from-{pos}").write_bytes(data[pos:])
            for _first, p in later:
                p.replace(aside / p.name)
            msg = (f"log {path.name} is corrupt at byte {pos}; {bad} bytes and "
                   f"{len(later)} later segment(s) moved to {aside}")
            report.corrupt.append(msg)
            log.error(msg)
        with open(path, "r+b") as f:
            f.truncate(pos)
            os.fsync(f.fileno())

    # --- writing ------------------------------------------------------------------------------

    def append(self, payload: bytes | Sequence) -> int:
        """Write one record through to the kernel; returns its lsn. On failure nothing remains.

        `payload` is the record's bytes, or a sequence of buffers (`frame_parts`) that make them
        when concatenated: they are checksummed and written one after the other, never joined
        into one copy (a push's record is as large as the push)."""
        parts = [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else payload
        if self._file is None or self._size >= self.segment_bytes:
            self._rotate()
        lsn = self.next_lsn
        lsn_bytes = struct.pack("<Q", lsn)
        crc, length = zlib.crc32(lsn_bytes), 0
        for part in parts:
            crc = zlib.crc32(part, crc)
            length += memoryview(part).nbytes
        start = self._size
        try:
            self._file.write(_HEAD.pack(length, crc, lsn))
            for part in parts:
                self._file.write(part)
            self._file.flush()
        except OSError:
            self._undo(start)
            raise
        self._size += _HEAD.size + length
        self.next_lsn += 1
        self._dirty = True
        return lsn

    def _undo(self, offset: int) -> None:
        """Drop a partly written record (e.g. disk full) so the log stays well-formed."""
        with self._lock:
            try:
                self._file.close()
            except OSError:
                pass
            path = self._current_path
            with open(path, "r+b") as f:
                f.truncate(offset)
            self._file = open(path, "ab", buffering=1 << 20)

    def commit(self) -> None:
        """Called once per batch of requests, before their acks go out (group commit)."""
        if self.fsync_policy == "always":
            self.sync()

    def sync(self) -> None:
        if self._dirty and self._file is not None:
            self._fsync(self._file.fileno())
            self._dirty = False

    def start_background_sync(self, interval_s: float) -> None:
        """fsync every `interval_s` from a thread. The syncer fsyncs a duplicate of the file
        descriptor, taken under a lock, so the log may rotate or close meanwhile; a record
        appended during an fsync is covered by the next one."""
        def run() -> None:
            while not self._stop_syncing.wait(interval_s):
                with self._lock:
                    if not self._dirty or self._file is None:
                        continue
                    fd = os.dup(self._file.fileno())
                    self._dirty = False
                try:
                    self._fsync(fd)
                except OSError as exc:
                    self._dirty = True
                    log.error("background fsync failed: %s", exc)
                finally:
                    os.close(fd)
        self._syncer = threading.Thread(target=run, name="wal-fsync", daemon=True)
        self._syncer.start()

    def _stop_background_sync(self) -> None:
        if self._syncer is not None:
            self._stop_syncing.set()
            self._syncer.join()
            self._syncer = None

    def _rotate(self) -> None:
        with self._lock:
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
        segments = _segments(self.dir)
        if segments and self._file is None and _continuable(segments[-1][1], self.segment_bytes):
            self._current_path = segments[-1][1]  # continue the newest segment after recovery
        else:
            self._current_path = self.dir / _segment_name(self.next_lsn)
        self._file = open(self._current_path, "ab", buffering=1 << 20)
        self._size = self._current_path.stat().st_size
        if self._size == 0:
            self._file.write(MAGIC)
            self._file.flush()
            self._size = len(MAGIC)
        fsync_dir(self.dir)

    def drop_before(self, lsn: int) -> int:
        """Delete segments whose records all have lsn <= `lsn`; returns how many."""
        segments = _segments(self.dir)
        dropped = 0
        for (_first, path), (next_first, _next) in zip(segments, segments[1:]):
            if next_first - 1 <= lsn and path != getattr(self, "_current_path", None):
                path.unlink()
                dropped += 1
        return dropped

    def close(self) -> None:
        self._stop_background_sync()
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None
