"""`Channel`: the blocking face of `Dealer`, for code that waits on its replies itself.

Requests carry a request id, so late replies to a timed-out request are recognised and
dropped. `readable` / `writable` wait on several channels at once, so a client can have a
request in flight to every shard and take the replies in the order they come.
"""
from __future__ import annotations

import time
from typing import Sequence

import zmq

from common.errors import Timeout
from common.messages import Message
from common.transport.dealer import DOWN, UP, Dealer
from common.transport.sockets import Endpoint, Unreachable, context, poll_ms


class Channel(Dealer, Endpoint):
    """DEALER socket to one peer, with request ids and timeouts."""

    def __init__(self, address: str, *, max_bytes: int | None = None, immediate: bool = False,
                 monitor: bool = False):
        super().__init__(context(), address, max_bytes, immediate, monitor)
        self._connections = 0

    def writable(self, timeout: float = 0.0) -> bool:
        """Whether a request can be queued now (with `immediate`: a connection is up), after
        waiting up to `timeout` seconds for one."""
        if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
            return True
        return timeout > 0 and bool(self._sock.poll(poll_ms(timeout), zmq.POLLOUT))

    def reply_waiting(self) -> bool:
        """Whether a reply can be read now without blocking (cheap; no poll)."""
        return self.waiting()

    def _lost_connection(self) -> bool:
        """Drain monitor events; True if a connection dropped since the last call."""
        lost = False
        while self._monitor is not None and self._monitor.poll(0):
            event = self._connection_event(self._monitor.recv_multipart())
            lost = event == DOWN or lost
            self._connections += event == UP
        return lost

    def connections(self) -> int:
        """How many connections to the peer have come up so far (with `monitor`): a count
        that grows after a reconnection, when what was in flight on the old one is lost."""
        self._lost_connection()
        return self._connections

    def send(self, msg: Message, connect_timeout: float | None = None) -> int:
        """Queue a request; returns its id. With `immediate` and `connect_timeout`, raises
        `Unreachable` when no connection to the peer comes up within that many seconds."""
        if connect_timeout is not None and not self.writable(connect_timeout):
            raise Unreachable(f"no connection to {self.address} within {connect_timeout:.2f}s")
        self._lost_connection()  # forget drops that happened before this request
        rid, frames = self._new_request(msg)
        if connect_timeout is not None:
            try:
                self._sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                raise self._dropped(waiting=False) from None
        else:
            self._sock.send_multipart(frames, copy=False)
        return rid

    def recv(self, rid: int, timeout: float) -> Message:
        """The reply to request `rid`; raises Timeout, or RemoteError for an error reply
        (with `monitor`: `Unreachable` as soon as the connection drops)."""
        deadline = time.monotonic() + timeout
        poller = None
        if self._monitor is not None:
            poller = zmq.Poller()
            poller.register(self._sock, zmq.POLLIN)
            poller.register(self._monitor, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"no reply from {self.address} within {timeout:.1f}s")
            if poller is None:
                if not self._sock.poll(poll_ms(remaining)):
                    continue
            else:
                events = dict(poller.poll(poll_ms(remaining)))
                if self._sock not in events:
                    if self._monitor in events and self._lost_connection():
                        raise self._dropped()
                    continue
            msg, got = self.read()
            if got != rid:
                continue  # reply to an earlier request that timed out
            return self.unwrap(msg)

    def recv_any(self) -> Message:
        """The next waiting reply, whatever request it answers (for event-loop users)."""
        return self.unwrap(self.read()[0])

    def read(self) -> tuple[Message, int]:
        """The next reply and its request id, error replies included (blocks: non-blocking
        callers check `poll()` or `reply_waiting()` first)."""
        return self._decode_reply(self._sock.recv_multipart(copy=False))

    def request(self, msg: Message, timeout: float = 10.0,
                connect_timeout: float | None = None) -> Message:
        return self.recv(self.send(msg, connect_timeout), timeout)

    def close(self) -> None:
        self._close_sockets()


def readable(channels: Sequence[Channel], timeout: float, events: bool = False) -> list[int]:
    """Indices of the channels with a reply waiting, after waiting up to `timeout` seconds;
    with `events`, a monitored channel's connection event also ends the wait (its index is
    then listed although no reply may be waiting)."""
    return _ready(channels, zmq.POLLIN, timeout, events)


def writable(channels: Sequence[Channel], timeout: float) -> list[int]:
    """Indices of the channels that can queue a request (with `immediate`: connected), after
    waiting up to `timeout` seconds for at least one."""
    up = [i for i, ch in enumerate(channels) if ch.writable()]
    if up or timeout <= 0:
        return up
    return _ready(channels, zmq.POLLOUT, timeout)


def _ready(channels: Sequence[Channel], flag: int, timeout: float,
           events: bool = False) -> list[int]:
    poller = zmq.Poller()
    for ch in channels:
        poller.register(ch._sock, flag)
        if events and ch._monitor is not None:
            poller.register(ch._monitor, zmq.POLLIN)
    ready = dict(poller.poll(poll_ms(timeout)))
    return [i for i, ch in enumerate(channels)
            if ch._sock in ready or (events and ch._monitor in ready)]
