"""`Publisher` / `Subscriber`: PUB/SUB for a shard's sequenced updates and heartbeats.

Updates are fire-and-forget on purpose (ZeroMQ Clone pattern): a subscriber that misses one
sees the gap in the sequence numbers and fetches a snapshot, so the publisher never waits
for a slow replica.
"""
from __future__ import annotations

import logging
from typing import Iterable

import zmq

from common.errors import DeltapsError
from common.messages import Message
from common.transport.sockets import Endpoint, bind_address, close_socket, new_socket
from common.wire import decode, encode

log = logging.getLogger(__name__)


class Publisher:
    """PUB socket bound where subscribers connect; a full send queue drops, never blocks."""

    def __init__(self, address: str, hwm: int = 100_000):
        self._sock = new_socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self.address = bind_address(self._sock, address)

    def publish(self, msg: Message) -> None:
        self._sock.send_multipart(encode(msg), copy=False)

    def close(self) -> None:
        close_socket(self._sock)


class Subscriber(Endpoint):
    """SUB socket connected to several publishers; yields decoded messages."""

    def __init__(self, addresses: Iterable[str], max_bytes: int | None = None, hwm: int = 100_000):
        self._sock = sock = new_socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.max_bytes = max_bytes
        for address in addresses:
            sock.connect(address)

    def drain(self, limit: int = 1000) -> list[Message]:
        """Up to `limit` waiting messages; undecodable ones are logged and skipped."""
        out = []
        for _ in range(limit):
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                out.append(decode([p.buffer for p in parts], self.max_bytes)[0])
            except DeltapsError as exc:
                log.warning("dropped bad update: %s", exc)
        return out

    def close(self) -> None:
        close_socket(self._sock)
