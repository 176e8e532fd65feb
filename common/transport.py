"""ZeroMQ sockets, and the only module that imports zmq.

- `RequestServer`: a ROUTER socket that decodes each request, dispatches it through a node's
  `op -> method` table and sends back the method's reply, or an `ErrorReply` naming the problem
  when decoding or the handler fails. The node keeps running whatever a peer sends.
- `Channel`: a DEALER socket to one peer; requests carry a request id so late replies to a
  timed-out request are recognised and dropped. `request_all` sends to many peers at once and
  gathers the replies, so a batch is pulled from every shard concurrently.
- `Publisher` / `Subscriber`: PUB/SUB for sequenced updates and heartbeats.
- `EventLoop`: polls registered sockets, runs timers, and stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import logging
import signal
import time
from typing import Callable, Iterable, Sequence

import zmq

from common.errors import DeltapsError, MalformedMessage, RemoteError, Timeout
from common.messages import ErrorReply, Message
from common.wire import decode, encode

log = logging.getLogger(__name__)
Handler = Callable[[Message], Message]


def context() -> zmq.Context:
    return zmq.Context.instance()


def bind_address(sock: zmq.Socket, address: str) -> str:
    """Bind, resolving a `:0`/`:*` port to the port the OS chose; returns the bound address."""
    if address.endswith(":0"):
        address = address[:-2] + ":*"
    sock.bind(address)
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


class RequestServer:
    """ROUTER socket answering requests through a handler table."""

    def __init__(self, address: str, handlers: dict[str, Handler], max_bytes: int):
        self.sock = context().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)  # zmq drops larger frames unread
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.address = bind_address(self.sock, address)
        self.handlers = handlers
        self.max_bytes = max_bytes
        self.before_replies: Callable[[], None] = lambda: None

    def handle_ready(self, max_batch: int = 256) -> None:
        """Answer the requests waiting on the socket as one batch.

        `before_replies` runs once after the batch is handled and before any reply is sent:
        the shard's group commit (one fsync covers every push of the batch).
        """
        replies = []
        for _ in range(max_batch):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            identity, frames = parts[0], [p.buffer for p in parts[1:]]
            replies.append((identity, *self.dispatch(frames)))
        if not replies:
            return
        self.before_replies()
        for identity, reply, rid in replies:
            try:
                self.sock.send_multipart([identity] + encode(reply, rid), copy=False)
            except zmq.ZMQError as exc:  # peer gone; nothing to do
                log.debug("reply dropped: %s", exc)

    def dispatch(self, frames: Sequence) -> tuple[Message, int]:
        rid = 0
        try:
            msg, rid = decode(frames, self.max_bytes)
            handler = self.handlers.get(msg.op)
            if handler is None:
                raise DeltapsError(f"op {msg.op!r} is not served by this node")
            return handler(msg), rid
        except DeltapsError as exc:
            log.warning("refused request: %s", exc)
            return ErrorReply(exc.code, str(exc)), rid
        except Exception as exc:  # a handler bug must not take the node down
            log.exception("handler failed")
            return ErrorReply("internal", f"{type(exc).__name__}: {exc}"), rid

    def close(self) -> None:
        self.sock.close(0)


class Channel:
    """DEALER socket to one peer, with request ids and timeouts."""

    def __init__(self, address: str, *, max_bytes: int | None = None):
        self.address = address
        self.max_bytes = max_bytes
        self.sock = context().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self._next_rid = 1

    def send(self, msg: Message) -> int:
        rid = self._next_rid
        self._next_rid += 1
        self.sock.send_multipart(encode(msg, rid), copy=False)
        return rid

    def recv(self, rid: int, timeout: float) -> Message:
        """The reply to request `rid`; raises Timeout, or RemoteError for an error reply."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(remaining * 1000):
                raise Timeout(f"no reply from {self.address} within {timeout:.1f}s")
            msg, got = self._read()
            if got != rid:
                continue  # reply to an earlier request that timed out
            return self._unwrap(msg)

    def recv_any(self) -> Message:
        """The next waiting reply, whatever request it answers (for event-loop users)."""
        msg, _rid = self._read()
        return self._unwrap(msg)

    def read(self) -> tuple[Message, int]:
        """The next waiting reply and its request id, error replies included (non-blocking
        callers check `sock.poll` first)."""
        return self._read()

    def _read(self) -> tuple[Message, int]:
        parts = self.sock.recv_multipart(copy=False)
        try:
            return decode([p.buffer for p in parts], self.max_bytes)
        except DeltapsError as exc:
            raise MalformedMessage(f"bad reply from {self.address}: {exc}") from exc

    def unwrap(self, msg: Message) -> Message:
        return self._unwrap(msg)

    def _unwrap(self, msg: Message) -> Message:
        if isinstance(msg, ErrorReply):
            raise RemoteError(msg.code, f"{self.address}: {msg.message}")
        return msg

    def send_raw(self, frames: Sequence[bytes]) -> None:
        """Send frames as they are: for tools and tests that probe a node with bad input."""
        self.sock.send_multipart(list(frames))

    def recv_raw_reply(self, timeout: float) -> Message:
        """Whatever reply comes next, decoded (error replies returned, not raised)."""
        if not self.sock.poll(timeout * 1000):
            raise Timeout(f"no reply from {self.address} within {timeout:.1f}s")
        return self._read()[0]

    def request(self, msg: Message, timeout: float = 10.0) -> Message:
        return self.recv(self.send(msg), timeout)

    def close(self) -> None:
        self.sock.close(0)


def readable(channels: Sequence[Channel], timeout: float) -> list[int]:
    """Indices of the channels with a reply waiting, after waiting up to `timeout` seconds."""
    poller = zmq.Poller()
    for ch in channels:
        poller.register(ch.sock, zmq.POLLIN)
    ready = dict(poller.poll(timeout * 1000))
    return [i for i, ch in enumerate(channels) if ch.sock in ready]


def request_all(calls: Iterable[tuple[Channel, Message]], timeout: float = 10.0) -> list[Message]:
    """Send every request first, then gather the replies: peers work concurrently."""
    sent = [(ch, ch.send(msg)) for ch, msg in calls]
    return [ch.recv(rid, timeout) for ch, rid in sent]


class Publisher:
    def __init__(self, address: str, hwm: int = 100_000):
        self.sock = context().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.address = bind_address(self.sock, address)

    def publish(self, msg: Message) -> None:
        self.sock.send_multipart(encode(msg), copy=False)

    def close(self) -> None:
        self.sock.close(0)


class Subscriber:
    """SUB socket connected to several publishers; yields decoded messages."""

    def __init__(self, addresses: Iterable[str], max_bytes: int | None = None, hwm: int = 100_000):
        self.sock = context().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.max_bytes = max_bytes
        for address in addresses:
            self.sock.connect(address)

    def drain(self, limit: int = 1000) -> list[Message]:
        """Up to `limit` waiting messages; undecodable ones are logged and skipped."""
        out = []
        for _ in range(limit):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                out.append(decode([p.buffer for p in parts], self.max_bytes)[0])
            except DeltapsError as exc:
                log.warning("dropped bad update: %s", exc)
        return out

    def close(self) -> None:
        self.sock.close(0)


class EventLoop:
    """Poll sockets, fire timers, stop on SIGTERM/SIGINT (single-threaded: no locks needed)."""

    def __init__(self):
        self.poller = zmq.Poller()
        self.callbacks: dict[zmq.Socket, Callable[[], None]] = {}
        self.timers: list[list] = []  # [next_due, interval, callback]
        self.running = False

    def add_socket(self, sock: zmq.Socket, callback: Callable[[], None]) -> None:
        self.poller.register(sock, zmq.POLLIN)
        self.callbacks[sock] = callback

    def every(self, seconds: float, callback: Callable[[], None]) -> None:
        self.timers.append([time.monotonic() + seconds, seconds, callback])

    def stop(self, *_args) -> None:
        self.running = False

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        self.running = True
        while self.running:
            now = time.monotonic()
            wait = min([t[0] for t in self.timers], default=now + 0.1) - now
            events = dict(self.poller.poll(max(0.0, min(wait, 0.1)) * 1000))
            for sock in events:
                self.callbacks[sock]()
            now = time.monotonic()
            for timer in self.timers:
                if timer[0] <= now:
                    timer[0] = now + timer[1]
                    timer[2]()
