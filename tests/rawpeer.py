"""Raw ZeroMQ peers for tests: a stranger that sends frames as they are, and a server socket a
test answers (or drops) request by request. They use zmq directly on purpose: the product's
transport never sends malformed frames nor ignores a request, which is what these tests need.
"""
from __future__ import annotations

from typing import Sequence

import zmq

from common.errors import Timeout
from common.messages import Message
from common.transport import Channel, context
from common.wire import decode


def _socket(kind: int) -> zmq.Socket:
    sock = context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


class RawDealer:
    """A DEALER connected to `address` that sends whatever frames it is given."""

    def __init__(self, address: str, max_bytes: int | None = None):
        self.address = address
        self.max_bytes = max_bytes
        self.sock = _socket(zmq.DEALER)
        self.sock.connect(address)

    def send(self, frames: Sequence[bytes]) -> None:
        self.sock.send_multipart(list(frames))

    def reply(self, timeout: float) -> Message:
        """The next reply, decoded (error replies returned, not raised)."""
        if not self.sock.poll(int(timeout * 1000)):
            raise Timeout(f"no reply from {self.address} within {timeout:.1f}s")
        parts = self.sock.recv_multipart(copy=False)
        return decode([p.buffer for p in parts], self.max_bytes)[0]

    def exchange(self, frames: Sequence[bytes], timeout: float = 5.0) -> Message:
        self.send(frames)
        return self.reply(timeout)

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> "RawDealer":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def raw_exchange(address: str, frames: Sequence[bytes], timeout: float = 5.0,
                 max_bytes: int | None = None) -> Message:
    """Send `frames` as they are from a fresh connection; the reply, error replies included."""
    with RawDealer(address, max_bytes) as peer:
        return peer.exchange(frames, timeout)


class RawRouter:
    """A ROUTER bound on a free local port: the test reads each request itself and decides
    whether (and what) to answer."""

    def __init__(self, address: str = "tcp://127.0.0.1:0"):
        self.sock = _socket(zmq.ROUTER)
        self.sock.bind(address.replace(":0", ":*") if address.endswith(":0") else address)
        self.address = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    def poll(self, timeout: float) -> bool:
        return bool(self.sock.poll(int(timeout * 1000)))

    def recv(self) -> tuple[bytes, list]:
        """(the sender's identity, the request's frames as buffers)."""
        parts = self.sock.recv_multipart(copy=False)
        return parts[0].bytes, [p.buffer for p in parts[1:]]

    def send(self, identity: bytes, frames: Sequence) -> None:
        self.sock.send_multipart([identity] + list(frames))

    def close(self) -> None:
        self.sock.close(0)


def next_reply(ch: Channel, timeout: float) -> Message:
    """The next reply waiting on a product channel, whatever request it answers, decoded
    (error replies returned, not raised)."""
    if not ch.poll(timeout):
        raise Timeout(f"no reply from {ch.address} within {timeout:.1f}s")
    return ch.read()[0]
