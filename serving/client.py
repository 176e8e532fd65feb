"""Python client for serving replicas: batch predictions with failover across replicas.

Requests rotate over replicas; a replica that times out, is not ready or is unreachable is
skipped and the request retried on the next one. Client mistakes (unknown model, bad instance)
are raised at once: another replica would refuse them too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from common import messages as m
from common.config import ClusterFile
from common.errors import DeltapsError, RemoteError, Timeout
from common.transport import Channel

RETRYABLE = {"not_ready", "timeout", "internal"}


@dataclass
class Prediction:
    probabilities: np.ndarray
    version: list[int]  # per-shard sequence numbers the answer reflects
    staleness_ms: float
    replica: str


class ServingClient:
    def __init__(self, addresses: Sequence[str], timeout: float = 5.0):
        if not addresses:
            raise DeltapsError("no serving replicas to talk to")
        self.addresses = list(addresses)
        self.timeout = timeout
        self.channels = [Channel(a) for a in self.addresses]
        self._next = 0

    @classmethod
    def from_cluster_file(cls, path: str | Path, timeout: float = 5.0) -> "ServingClient":
        return cls([n.address for n in ClusterFile.load(path).replicas()], timeout)

    def predict(self, model: str, instances: Sequence[Mapping]) -> Prediction:
        """Probabilities for every instance (feature dicts), from the first replica that answers."""
        errors: list[str] = []
        codes: set[str] = set()
        for attempt in range(len(self.channels)):
            k = (self._next + attempt) % len(self.channels)
            try:
                reply = self.channels[k].request(m.Predict(model, list(instances)), self.timeout)
            except Timeout as exc:
                self._reset(k)
                errors.append(str(exc))
                codes.add(exc.code)
                continue
            except RemoteError as exc:
                if exc.remote_code not in RETRYABLE:
                    raise
                errors.append(str(exc))
                codes.add(exc.remote_code)
                continue
            self._next = (k + 1) % len(self.channels)
            return Prediction(np.array(reply.probabilities), reply.version, reply.staleness_ms,
                              self.addresses[k])
        code = codes.pop() if len(codes) == 1 else "unavailable"
        raise RemoteError(code, "no replica answered: " + "; ".join(errors))

    def _reset(self, k: int) -> None:
        """Drop requests queued for an unresponsive replica by replacing its socket."""
        self.channels[k].close()
        self.channels[k] = Channel(self.addresses[k])

    def close(self) -> None:
        for ch in self.channels:
            ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
