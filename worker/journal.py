"""The in-flight push of an acknowledged source, written down before it is sent.

Why: a push goes to every shard owning some of its keys, and a worker killed while it is on its
way may leave some shards with it and others without. Learning that batch again after a
restart would pull state that already holds part of it, so the new deltas would differ from
the ones the other shards applied: the model would then be neither "with" nor "without" the
batch. Instead the source keeps the push itself (`JournalRecord`: push number, keys, deltas,
event count and the source position it covers) beside its input (a Redis key next to the
stream, a sidecar file next to a followed file) until every shard has acknowledged it, and a
restarted worker sends the journaled push again first: shards that have it answer it as a
duplicate, the others apply the very same deltas, and only then is its input acknowledged.

A source that journals implements `AcknowledgedSource`; the trainer drives it
(`worker.trainer`). Encoded with msgpack, arrays as raw bytes (never element-wise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import numpy as np

from common.errors import DeltapsError

FORMAT = 1


@dataclass
class JournalRecord:
    model: str
    push_no: int
    keys: np.ndarray  # uint64, sorted unique slots
    deltas: np.ndarray  # float32 (len(keys), S)
    events: int
    position: Any  # the source's (msgpack-able) position of the batch the push learned

    def encode(self) -> bytes:
        return msgpack.packb({
            "format": FORMAT, "model": self.model, "push_no": self.push_no,
            "events": self.events, "position": self.position,
            "keys": np.ascontiguousarray(self.keys, np.uint64).tobytes(),
            "deltas": np.ascontiguousarray(self.deltas, np.float32).tobytes(),
            "width": int(self.deltas.shape[1]) if self.deltas.ndim == 2 else 1,
        }, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes, where: str) -> "JournalRecord":
        """A record read back from `where` (named in the error when it is damaged)."""
        try:
            d = msgpack.unpackb(data, raw=False)
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT}")
            keys = np.frombuffer(d["keys"], np.uint64).copy()
            deltas = np.frombuffer(d["deltas"], np.float32).reshape(keys.size, d["width"]).copy()
            return cls(d["model"], int(d["push_no"]), keys, deltas, int(d["events"]),
                       d["position"])
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            raise DeltapsError(f"the push journal at {where} is damaged ({exc}); it holds a push "
                               "that some shards may have applied: restore it, or delete it "
                               "and accept that one batch may be learned partly twice") from None


class AcknowledgedSource(Protocol):
    """A source whose input is acknowledged once learned (Redis Streams, a followed file, the
    ZeroMQ ingest socket). `position()` is that of the batch the last `read` returned; the
    trainer journals each push before sending it and acknowledges its position, in order, once
    every shard acknowledged the push (which also drops its record from the journal)."""

    worker_id: str

    def position(self) -> Any: ...

    def journal(self, record: JournalRecord) -> None: ...

    def journaled(self) -> list[JournalRecord]: ...

    def acknowledge(self, position: Any, push_no: int) -> None: ...
