"""A source's small durable state in one file, replaced atomically: the acknowledged position
and the journaled pushes in flight (`worker.journal`) together, so that no crash falls between
acknowledging a batch and dropping its journal record. Written with write, fsync, rename."""
from __future__ import annotations

import os
from pathlib import Path

import msgpack

from common.errors import DeltapsError


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
