"""Prediction cache: a repeated identical read answered without scoring again.

Keyed by (model, canonical request bytes); an entry remembers the model version it was
computed at and is used only while the model is still at exactly that version (epoch and
sequence number of every shard), and for at most `ttl_ms`. So a hit returns exactly what
scoring again would return. Requests whose canonical form exceeds 64 KiB are never cached. Off when `ttl_ms` or `max_entries` is 0 (the default). Least
recently used entries are dropped first. Plain object, no sockets; the replica's loop owns it.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

import msgpack
import numpy as np

MAX_KEY_BYTES = 1 << 16  # larger requests are not cached (the cache bounds entries, not bytes)


def instances_key(instances: list) -> bytes | None:
    """Canonical bytes of feature-dict instances (field order does not matter); None when the
    instances cannot be encoded canonically (they are then simply not cached)."""
    try:
        canonical = [sorted(i.items()) if isinstance(i, dict) else i for i in instances]
        key = b"d" + msgpack.packb(canonical, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None
    return key if len(key) <= MAX_KEY_BYTES else None


def ids_key(offsets: np.ndarray, ids: np.ndarray) -> bytes | None:
    """Canonical bytes of a pre-hashed request in CSR form (None when too large to cache)."""
    if offsets.nbytes + ids.nbytes > MAX_KEY_BYTES:
        return None
    return b"i" + offsets.size.to_bytes(8, "little") + offsets.tobytes() + ids.tobytes()


class PredictionCache:
    """Answers to identical predict requests, valid only at the exact model version they were
    computed at and for a short time: repeated reads (a page asking for the same items) skip
    scoring without ever seeing weights the model no longer has."""

    def __init__(self, ttl_ms: float = 0.0, max_entries: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_ms / 1000.0
        self.max_entries = max_entries
        self.clock = clock
        self.entries: OrderedDict[tuple[str, bytes], tuple[tuple, float, np.ndarray]] = \
            OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.max_entries > 0

    def get(self, model: str, key: bytes | None, version: tuple) -> np.ndarray | None:
        """The cached probabilities if an entry for this request is at `version` and fresh."""
        if not self.enabled or key is None:
            return None
        entry = self.entries.get((model, key))
        if entry is not None:
            at, expires, probabilities = entry
            if at == version and self.clock() < expires:
                self.entries.move_to_end((model, key))
                self.hits += 1
                return probabilities
            del self.entries[(model, key)]
        self.misses += 1
        return None

    def put(self, model: str, key: bytes | None, version: tuple, probabilities: np.ndarray) -> None:
        if not self.enabled or key is None:
            return
        self.entries[(model, key)] = (version, self.clock() + self.ttl_s, probabilities)
        self.entries.move_to_end((model, key))
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def stats(self) -> dict:
        lookups = self.hits + self.misses
        return {"enabled": self.enabled, "entries": len(self.entries), "hits": self.hits,
                "misses": self.misses,
                "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0}
