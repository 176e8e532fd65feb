"""A worker's connection to every shard: split keys by shard, talk to all shards at once.

Requests to all shards go out together and replies are gathered as they come. A shard that
does not answer within `retry_s` is sent the same request again (with growing intervals) until
`timeout`: the worker blocks while a shard restarts instead of dropping its work. Pushes carry
(worker id, push number), so a push whose acknowledgement was lost and is sent again is
applied once.
"""
from __future__ import annotations

import logging
import time
import uuid

import numpy as np

from common import messages as m
from common.config import NodeInfo
from common.errors import DeltapsError, ProtocolMismatch, Timeout
from common.sharding import split_by_shard
from common.transport import Channel, readable

log = logging.getLogger("deltaps.worker")


class PSClient:
    """Pull and push sparse rows of any model; keys must be sorted unique slots (uint64)."""

    def __init__(self, shards: list[NodeInfo], timeout: float = 300.0, retry_s: float = 1.0,
                 max_bytes: int | None = None, worker_id: str | None = None):
        self.timeout = timeout
        self.retry_s = retry_s
        self.worker_id = worker_id or uuid.uuid4().hex[:16]
        self.push_no = 0
        self.retries = 0
        self.channels = [Channel(s.address, max_bytes=max_bytes) for s in shards]
        self.n_shards = len(shards)
        hellos = self.call_all([(k, m.Hello(m.PROTOCOL, "worker")) for k in range(self.n_shards)])
        for k, hello in enumerate(hellos):
            if hello.protocol != m.PROTOCOL:
                raise ProtocolMismatch(f"shard {k} speaks protocol {hello.protocol}, "
                                       f"this worker {m.PROTOCOL}")
            if hello.n_shards != self.n_shards or hello.index != k:
                raise DeltapsError(f"shard at {self.channels[k].address} is shard {hello.index} "
                                   f"of {hello.n_shards}, expected {k} of {self.n_shards}")
        self.models = hellos[0].models

    def call_all(self, calls: list[tuple[int, m.Message]]) -> list[m.Message]:
        """Send each (shard, request) at once; gather replies, resending to silent shards."""
        results: dict[int, m.Message] = {}
        rids = {i: self.channels[k].send(msg) for i, (k, msg) in enumerate(calls)}
        start = time.monotonic()
        wait = self.retry_s
        resend_at = start + wait
        while len(results) < len(calls):
            pending = [i for i in range(len(calls)) if i not in results]
            now = time.monotonic()
            if now - start > self.timeout:
                silent = sorted({calls[i][0] for i in pending})
                raise Timeout(f"shard(s) {silent} did not answer for {self.timeout:.0f}s")
            if now >= resend_at:
                for i in pending:
                    k, msg = calls[i]
                    log.warning("shard %d silent for %.1fs; sending %s again", k, now - start,
                                msg.op)
                    rids[i] = self.channels[k].send(msg)
                    self.retries += 1
                wait = min(wait * 2, 8.0)
                resend_at = now + wait
            chans = [self.channels[calls[i][0]] for i in pending]
            for j in readable(chans, max(0.0, resend_at - time.monotonic())):
                i = pending[j]
                reply = self._take(self.channels[calls[i][0]], rids[i])
                if reply is not None:
                    results[i] = reply
        return [results[i] for i in range(len(calls))]

    @staticmethod
    def _take(ch: Channel, rid: int) -> m.Message | None:
        """The waiting reply if it answers `rid`; stale replies to earlier sends are dropped."""
        while ch.sock.poll(0):
            msg, got = ch.read()
            if got == rid:
                return ch.unwrap(msg)
        return None

    def pull(self, model: str, keys: np.ndarray) -> np.ndarray:
        """Current weights of `keys`, in the order of `keys`."""
        parts = [(k, idx) for k, idx in enumerate(split_by_shard(keys, self.n_shards)) if idx.size]
        replies = self.call_all([(k, m.Pull(model, keys[idx])) for k, idx in parts])
        values = np.empty(keys.size, dtype=np.float32)
        for (_k, idx), reply in zip(parts, replies):
            values[idx] = reply.values
        return values

    def push(self, model: str, keys: np.ndarray, grads: np.ndarray) -> dict[int, int]:
        """Send summed gradients; returns {shard: update seq that will publish them}."""
        grads = np.asarray(grads, dtype=np.float32)
        self.push_no += 1
        parts = [(k, idx) for k, idx in enumerate(split_by_shard(keys, self.n_shards)) if idx.size]
        acks = self.call_all([(k, m.Push(model, keys[idx], grads[idx], self.worker_id,
                                         self.push_no)) for k, idx in parts])
        return {k: ack.seq for (k, _idx), ack in zip(parts, acks)}

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
