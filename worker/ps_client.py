"""A worker's connection to every shard: split keys by shard, talk to all shards at once."""
from __future__ import annotations

import numpy as np

from common import messages as m
from common.config import NodeInfo
from common.errors import DeltapsError, ProtocolMismatch
from common.sharding import split_by_shard
from common.transport import Channel, request_all


class PSClient:
    """Pull and push sparse rows of any model; keys must be sorted unique slots (uint64)."""

    def __init__(self, shards: list[NodeInfo], timeout: float = 30.0,
                 max_bytes: int | None = None):
        self.timeout = timeout
        self.channels = [Channel(s.address, max_bytes=max_bytes) for s in shards]
        self.n_shards = len(shards)
        hellos = request_all(((ch, m.Hello(m.PROTOCOL, "worker")) for ch in self.channels),
                             timeout)
        for k, hello in enumerate(hellos):
            if hello.protocol != m.PROTOCOL:
                raise ProtocolMismatch(f"shard {k} speaks protocol {hello.protocol}, "
                                       f"this worker {m.PROTOCOL}")
            if hello.n_shards != self.n_shards or hello.index != k:
                raise DeltapsError(f"shard at {self.channels[k].address} is shard {hello.index} "
                                   f"of {hello.n_shards}, expected {k} of {self.n_shards}")
        self.models = hellos[0].models

    def pull(self, model: str, keys: np.ndarray) -> np.ndarray:
        """Current weights of `keys`, in the order of `keys`."""
        parts = [(k, idx) for k, idx in enumerate(split_by_shard(keys, self.n_shards)) if idx.size]
        replies = request_all(((self.channels[k], m.Pull(model, keys[idx])) for k, idx in parts),
                              self.timeout)
        values = np.empty(keys.size, dtype=np.float32)
        for (_k, idx), reply in zip(parts, replies):
            values[idx] = reply.values
        return values

    def push(self, model: str, keys: np.ndarray, grads: np.ndarray) -> dict[int, int]:
        """Send summed gradients; returns {shard: update seq that will publish them}."""
        grads = np.asarray(grads, dtype=np.float32)
        parts = [(k, idx) for k, idx in enumerate(split_by_shard(keys, self.n_shards)) if idx.size]
        acks = request_all(((self.channels[k], m.Push(model, keys[idx], grads[idx]))
                            for k, idx in parts), self.timeout)
        return {k: ack.seq for (k, _idx), ack in zip(parts, acks)}

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
