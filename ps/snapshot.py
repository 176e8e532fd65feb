"""Shard snapshots: every model's weights and optimizer state, plus what they cover.

File layout:

    b"DPSNAP01" | u64 header length | msgpack header | raw arrays | u32 crc32 | b"DPSNEND!"

The header records the log position (lsn) and publish sequence numbers the snapshot covers, the
duplicate-detection table, and each model's layout. A snapshot is written to a temporary file,
fsynced, renamed into place and the directory fsynced, so a crash leaves either the old set of
snapshots or the new one. Loading verifies magic, sizes and checksum; a bad snapshot is reported,
moved to ``corrupt/`` and the previous one is tried.
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

from ps.wal import fsync_dir

log = logging.getLogger("deltaps.snapshot")
MAGIC = b"DPSNAP01"
END = b"DPSNEND!"


class CorruptSnapshot(Exception):
    pass


@dataclass
class Snapshot:
    path: Path
    lsn: int
    header: dict
    arrays: dict[str, dict[str, np.ndarray]]  # model -> state name -> array


def _name(lsn: int) -> str:
    return f"snap-{lsn:020d}.bin"


def _lsn_of(path: Path) -> int | None:
    """The log position a snapshot file's name says it covers; None for another file."""
    digits = path.name[len("snap-"):-len(".bin")]
    return int(digits) if path.name.startswith("snap-") and path.name.endswith(".bin") \
        and digits.isdigit() else None


def list_snapshots(directory: Path) -> list[Path]:
    """Snapshot files, newest first."""
    return sorted((p for p in directory.glob("snap-*.bin") if _lsn_of(p) is not None),
                  key=_lsn_of, reverse=True)


def snapshot_lsns(directory: Path) -> list[int]:
    """The log positions of the snapshots in `directory`, newest first."""
    return [_lsn_of(p) for p in list_snapshots(directory)]


def write_snapshot(directory: Path, lsn: int, header: dict,
                   arrays: dict[str, dict[str, np.ndarray]], keep: int = 2) -> Path:
    """Write atomically; then delete all but the `keep` newest snapshots."""
    directory.mkdir(parents=True, exist_ok=True)
    layout = {model: [[name, str(a.dtype), int(a.size)] for name, a in state.items()]
              for model, state in arrays.items()}
    head = msgpack.packb({**header, "lsn": lsn, "layout": layout, "written": time.time()})
    final = directory / _name(lsn)
    tmp = final.with_suffix(".tmp")
    crc = 0
    with open(tmp, "wb") as f:
        for chunk in [MAGIC, struct.pack("<Q", len(head)), head]:
            f.write(chunk)
            crc = zlib.crc32(chunk, crc)
        for state in arrays.values():
            for a in state.values():
                buf = memoryview(np.ascontiguousarray(a)).cast("B")
                f.write(buf)
                crc = zlib.crc32(buf, crc)
        f.write(struct.pack("<I", crc) + END)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(final)
    fsync_dir(directory)
    for old in list_snapshots(directory)[keep:]:
        old.unlink()
    return final


def read_snapshot(path: Path) -> Snapshot:
    data = path.read_bytes()
    if len(data) < len(MAGIC) + 8 + 4 + len(END) or data[:8] != MAGIC:
        raise CorruptSnapshot(f"{path.name}: not a deltaps snapshot (bad magic or too short)")
    if data[-8:] != END:
        raise CorruptSnapshot(f"{path.name}: truncated (end marker missing)")
    (stored_crc,) = struct.unpack_from("<I", data, len(data) - 12)
    if zlib.crc32(memoryview(data)[:-12]) != stored_crc:
        raise CorruptSnapshot(f"{path.name}: checksum mismatch")
    (head_len,) = struct.unpack_from("<Q", data, 8)
    header = msgpack.unpackb(data[16:16 + head_len])
    pos = 16 + head_len
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for model, entries in header["layout"].items():
        arrays[model] = {}
        for name, dtype, count in entries:
            nbytes = np.dtype(dtype).itemsize * count
            if pos + nbytes > len(data) - 12:
                raise CorruptSnapshot(f"{path.name}: array {model}.{name} runs past the end")
            arrays[model][name] = np.frombuffer(data, dtype, count, pos).copy()
            pos += nbytes
    if pos != len(data) - 12:
        raise CorruptSnapshot(f"{path.name}: {len(data) - 12 - pos} unexpected trailing bytes")
    return Snapshot(path, header["lsn"], header, arrays)


def load_newest_good(directory: Path) -> tuple[Snapshot | None, list[str]]:
    """The newest snapshot that verifies, and a message for every one refused on the way."""
    refused = []
    for path in list_snapshots(directory):
        try:
            return read_snapshot(path), refused
        except (CorruptSnapshot, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            msg = f"refused snapshot {exc}" if isinstance(exc, CorruptSnapshot) else \
                f"refused snapshot {path.name}: unreadable header ({exc})"
            log.error(msg + "; falling back to the previous one")
            refused.append(msg)
            aside = directory / "corrupt"
            aside.mkdir(exist_ok=True)
            path.replace(aside / path.name)
    return None, refused
