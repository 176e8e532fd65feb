"""ZeroMQ sockets, and the only module that imports zmq.

- `RequestServer`: a ROUTER socket that decodes each request, dispatches it through a node's
  `op -> method` table and sends back the method's reply, or an `ErrorReply` naming the problem
  when decoding or the handler fails. The node keeps running whatever a peer sends.
- `Channel`: a DEALER socket to one peer; requests carry a request id so late replies to a
  timed-out request are recognised and dropped. `request_all` sends to many peers at once and
  gathers the replies, so a batch is pulled from every shard concurrently.
- `Publisher` / `Subscriber`: PUB/SUB for sequenced updates and heartbeats.
- `EventLoop`: polls registered sockets, runs timers, and stops on SIGTERM/SIGINT.
- `AsyncChannel`: the asyncio twin of `Channel` (zmq.asyncio) for many concurrent requests
  on one DEALER socket: each reply is routed to its request's future by request id. Used by
  the asyncio serving client and by a replica's HTTP thread.

Client channels may ask for `immediate=True` (a request is queued only on a live connection,
so a dead peer is noticed at send time instead of after a timeout) and `monitor=True` (a
request in flight on a connection that drops fails at once with `Unreachable`).
"""
from __future__ import annotations

import asyncio
import logging
import math
import select
import signal
import time
from typing import Callable, Iterable, Sequence

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from common.errors import DeltapsError, MalformedMessage, RemoteError, Timeout
from common.messages import ErrorReply, Message
from common.wire import decode, encode

log = logging.getLogger(__name__)


def poll_ms(seconds: float) -> int:
    """A zmq poll timeout in whole milliseconds, rounded up (zmq truncates a float): a wait
    of 0.4 ms must not become a poll(0), or a loop waiting for a timer spins for its last
    millisecond, burning a core and (measured) adding a 1 ms tail to replies on 2 cores."""
    return max(0, math.ceil(seconds * 1000.0))


# Frames below this size are copied when sent: zero-copy costs a tracker object and a wake-up of
# pyzmq's garbage-collector thread per frame, which only pays off for multi-megabyte arrays.
COPY_THRESHOLD = 4 << 20
Handler = Callable[[Message], Message]


def context() -> zmq.Context:
    return zmq.Context.instance()


_async_context: zmq.asyncio.Context | None = None


def async_context() -> zmq.asyncio.Context:
    """An asyncio view of the process's one zmq context (inproc endpoints are shared)."""
    global _async_context
    if _async_context is None or _async_context.underlying != context().underlying:
        _async_context = zmq.asyncio.Context.shadow(context().underlying)
    return _async_context


class Unreachable(DeltapsError):
    """The peer has no live connection, or the connection carrying a request dropped."""

    code = "unreachable"


_MONITOR_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED


def _client_socket(ctx, address: str, immediate: bool, monitor: bool):
    """(DEALER connected to `address`, its monitor socket or None); the monitor is attached
    before connecting so that no connection event is missed."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.copy_threshold = COPY_THRESHOLD
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
    mon = sock.get_monitor_socket(_MONITOR_EVENTS) if monitor else None
    sock.connect(address)
    return sock, mon


def _close_socket(sock: zmq.Socket, monitor: zmq.Socket | None) -> None:
    if monitor is not None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(0)
    sock.close(0)


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
        self.sock.copy_threshold = COPY_THRESHOLD
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)  # zmq drops larger frames unread
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.address = bind_address(self.sock, address)
        self.handlers = handlers
        self.max_bytes = max_bytes
        self.before_replies: Callable[[], None] = lambda: None
        self.batch_handlers: dict[str, Callable[[list[Message]], list]] = {}
        self.requests = 0  # requests answered (error replies included)
        self.errors: dict[str, int] = {}  # error replies sent, by error code

    def bind(self, address: str) -> str:
        """Also answer on `address` (e.g. an inproc endpoint for threads of this process)."""
        return bind_address(self.sock, address)

    def waiting(self) -> bool:
        """Whether a request is waiting to be read (cheap; no poll)."""
        return bool(self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def handle_ready(self, max_batch: int = 256) -> None:
        """Answer the requests waiting on the socket as one batch.

        `before_replies` runs once after the batch is handled and before any reply is sent:
        the shard's group commit (one fsync covers every push of the batch). Requests whose op
        has an entry in `batch_handlers` are handed over together, once the others of the batch
        are handled: `batch_handlers[op](messages)` returns one reply (or DeltapsError) each
        (a replica scores several waiting predicts in one vectorized pass).
        """
        replies: list[list] = []  # [identity, reply, rid]
        deferred: dict[str, list[int]] = {}
        for _ in range(max_batch):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            identity, frames = parts[0], [p.buffer for p in parts[1:]]
            if self.batch_handlers:
                msg, rid, refused = self._decode(frames)
                if refused is None and msg.op in self.batch_handlers:
                    deferred.setdefault(msg.op, []).append(len(replies))
                    replies.append([identity, msg, rid])
                    continue
                reply = refused if refused is not None else self._run(msg)
            else:
                reply, rid = self.dispatch(frames)
            replies.append([identity, reply, rid])
        if not replies:
            return
        for op, idx in deferred.items():
            for i, reply in zip(idx, self._run_batch(op, [replies[i][1] for i in idx])):
                replies[i][1] = reply
        self.before_replies()
        for identity, reply, rid in replies:
            self.requests += 1
            if isinstance(reply, ErrorReply):
                self.errors[reply.code] = self.errors.get(reply.code, 0) + 1
            try:
                self.sock.send_multipart([identity] + encode(reply, rid), copy=False)
            except zmq.ZMQError as exc:  # peer gone; nothing to do
                log.debug("reply dropped: %s", exc)

    def dispatch(self, frames: Sequence) -> tuple[Message, int]:
        msg, rid, refused = self._decode(frames)
        return (refused if refused is not None else self._run(msg)), rid

    def _decode(self, frames: Sequence) -> tuple[Message | None, int, ErrorReply | None]:
        """(request, rid, None), or (None, rid, error reply) when it cannot be served."""
        rid = 0
        try:
            msg, rid = decode(frames, self.max_bytes)
            if msg.op not in self.handlers and msg.op not in self.batch_handlers:
                raise DeltapsError(f"op {msg.op!r} is not served by this node")
            return msg, rid, None
        except DeltapsError as exc:
            log.warning("refused request: %s", exc)
            return None, rid, ErrorReply(exc.code, str(exc))

    def _run(self, msg: Message) -> Message:
        try:
            handler = self.handlers.get(msg.op)
            if handler is None:  # only a batch handler: a batch of one
                return self._run_batch(msg.op, [msg])[0]
            return handler(msg)
        except DeltapsError as exc:
            log.warning("refused request: %s", exc)
            return ErrorReply(exc.code, str(exc))
        except Exception as exc:  # a handler bug must not take the node down
            log.exception("handler failed")
            return ErrorReply("internal", f"{type(exc).__name__}: {exc}")

    def _run_batch(self, op: str, msgs: list[Message]) -> list[Message]:
        try:
            results = self.batch_handlers[op](msgs)
        except Exception as exc:  # a handler bug must not take the node down
            log.exception("batch handler failed")
            return [ErrorReply("internal", f"{type(exc).__name__}: {exc}")] * len(msgs)
        out = []
        for r in results:
            if isinstance(r, DeltapsError):
                log.warning("refused request: %s", r)
                r = ErrorReply(r.code, str(r))
            out.append(r)
        return out

    def close(self) -> None:
        self.sock.close(0)


class Channel:
    """DEALER socket to one peer, with request ids and timeouts."""

    def __init__(self, address: str, *, max_bytes: int | None = None, immediate: bool = False,
                 monitor: bool = False):
        self.address = address
        self.max_bytes = max_bytes
        self.immediate = immediate
        self.sock, self.monitor = _client_socket(context(), address, immediate, monitor)
        self._next_rid = 1

    def writable(self, timeout: float = 0.0) -> bool:
        """Whether a request can be queued now (with `immediate`: a connection is up), after
        waiting up to `timeout` seconds for one."""
        if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
            return True
        return timeout > 0 and bool(self.sock.poll(poll_ms(timeout), zmq.POLLOUT))

    def reply_waiting(self) -> bool:
        """Whether a reply can be read now without blocking (cheap; no poll)."""
        return bool(self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def fileno(self) -> int:
        """A file descriptor that turns readable when the socket's state may have changed
        (ZMQ_FD, edge-triggered: check `reply_waiting()` after every wake-up). Lets a caller
        wait with `select` at sub-millisecond resolution (zmq polls in whole milliseconds)."""
        return self.sock.getsockopt(zmq.FD)

    def _lost_connection(self) -> bool:
        """Drain monitor events; True if a connection dropped since the last call."""
        lost = False
        while self.monitor is not None and self.monitor.poll(0):
            event = parse_monitor_message(self.monitor.recv_multipart())
            lost = lost or event["event"] == zmq.EVENT_DISCONNECTED
        return lost

    def send(self, msg: Message, connect_timeout: float | None = None) -> int:
        """Queue a request; returns its id. With `immediate` and `connect_timeout`, raises
        `Unreachable` when no connection to the peer comes up within that many seconds."""
        if connect_timeout is not None and not self.writable(connect_timeout):
            raise Unreachable(f"no connection to {self.address} within {connect_timeout:.2f}s")
        self._lost_connection()  # forget drops that happened before this request
        rid = self._next_rid
        self._next_rid += 1
        if connect_timeout is not None:
            try:
                self.sock.send_multipart(encode(msg, rid), zmq.NOBLOCK, copy=False)
            except zmq.Again:
                raise Unreachable(f"connection to {self.address} dropped") from None
        else:
            self.sock.send_multipart(encode(msg, rid), copy=False)
        return rid

    def recv(self, rid: int, timeout: float) -> Message:
        """The reply to request `rid`; raises Timeout, or RemoteError for an error reply
        (with `monitor`: `Unreachable` as soon as the connection drops)."""
        deadline = time.monotonic() + timeout
        poller = None
        if self.monitor is not None:
            poller = zmq.Poller()
            poller.register(self.sock, zmq.POLLIN)
            poller.register(self.monitor, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"no reply from {self.address} within {timeout:.1f}s")
            if poller is None:
                if not self.sock.poll(poll_ms(remaining)):
                    continue
            else:
                events = dict(poller.poll(poll_ms(remaining)))
                if self.sock not in events:
                    if self.monitor in events and self._lost_connection():
                        raise Unreachable(f"connection to {self.address} dropped "
                                          "while waiting for a reply")
                    continue
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
        if not self.sock.poll(poll_ms(timeout)):
            raise Timeout(f"no reply from {self.address} within {timeout:.1f}s")
        return self._read()[0]

    def request(self, msg: Message, timeout: float = 10.0,
                connect_timeout: float | None = None) -> Message:
        return self.recv(self.send(msg, connect_timeout), timeout)

    def close(self) -> None:
        _close_socket(self.sock, self.monitor)


def readable(channels: Sequence[Channel], timeout: float) -> list[int]:
    """Indices of the channels with a reply waiting, after waiting up to `timeout` seconds."""
    poller = zmq.Poller()
    for ch in channels:
        poller.register(ch.sock, zmq.POLLIN)
    ready = dict(poller.poll(poll_ms(timeout)))
    return [i for i, ch in enumerate(channels) if ch.sock in ready]


def writable(channels: Sequence[Channel], timeout: float) -> list[int]:
    """Indices of the channels that can queue a request (with `immediate`: connected), after
    waiting up to `timeout` seconds for at least one."""
    up = [i for i, ch in enumerate(channels) if ch.writable()]
    if up or timeout <= 0:
        return up
    poller = zmq.Poller()
    for ch in channels:
        poller.register(ch.sock, zmq.POLLOUT)
    ready = dict(poller.poll(poll_ms(timeout)))
    return [i for i, ch in enumerate(channels) if ch.sock in ready]


def request_all(calls: Iterable[tuple[Channel, Message]], timeout: float = 10.0) -> list[Message]:
    """Send every request first, then gather the replies: peers work concurrently."""
    sent = [(ch, ch.send(msg)) for ch, msg in calls]
    return [ch.recv(rid, timeout) for ch, rid in sent]


class Publisher:
    def __init__(self, address: str, hwm: int = 100_000):
        self.sock = context().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.copy_threshold = COPY_THRESHOLD
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
    """Wait on sockets and timers, stop on SIGTERM/SIGINT (single-threaded: no locks needed).

    Waits with `select` on the sockets' ZMQ_FD descriptors, so a timer fires on time to the
    microsecond without spinning (zmq's own poll counts in whole milliseconds). ZMQ_FD is
    edge-triggered: every socket's ZMQ_EVENTS is checked after each wake-up, and the loop
    only sleeps once none has a message waiting.
    """

    def __init__(self):
        self.callbacks: dict[zmq.Socket, Callable[[], None]] = {}
        self.timers: list[list] = []  # [next_due, interval, callback]
        self.running = False

    def add_socket(self, sock: zmq.Socket, callback: Callable[[], None]) -> None:
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
        sockets = list(self.callbacks.items())
        fds = [sock.getsockopt(zmq.FD) for sock, _ in sockets]
        while self.running:
            busy = False
            for sock, callback in sockets:
                if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    callback()
                    busy = True
            now = time.monotonic()
            for timer in self.timers:
                if timer[0] <= now:
                    timer[0] = now + timer[1]
                    timer[2]()
            if busy or not self.running:
                continue  # more may be waiting: ZMQ_FD will not signal it again
            wait = min([t[0] for t in self.timers], default=now + 0.1) - time.monotonic()
            if wait > 0:
                select.select(fds, [], [], min(wait, 0.1))


class AsyncChannel:
    """DEALER socket to one peer for asyncio code: many requests in flight at once.

    One reader task routes each reply to the future of the request with its id; replies to
    requests that timed out are dropped. With `monitor`, a watcher task tracks whether a
    connection is up (`connected`) and fails the requests in flight when it drops. Create,
    use and close it on one event loop. (Connection state comes from monitor events, never
    from ZMQ_EVENTS: reading that on an asyncio socket would swallow the edge-triggered
    wake-up its reader waits for.)
    """

    def __init__(self, address: str, *, max_bytes: int | None = None, immediate: bool = False,
                 monitor: bool = False):
        self.address = address
        self.max_bytes = max_bytes
        self.immediate = immediate
        self.sock, self.monitor = _client_socket(async_context(), address, immediate, monitor)
        self.connected = monitor is False  # without a monitor: assumed
        self._up: asyncio.Event | None = None
        self._next_rid = 1
        self._pending: dict[int, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self.closed = False

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def writable(self) -> bool:
        """Whether a connection is up (with `monitor`; otherwise assumed)."""
        return self.connected

    def start(self) -> None:
        """Start the reader (and watcher) tasks on the running loop; idempotent."""
        if not self._tasks and not self.closed:
            self._up = asyncio.Event()
            self._tasks.append(asyncio.ensure_future(self._read_replies()))
            if self.monitor is not None:
                self._tasks.append(asyncio.ensure_future(self._watch_connection()))

    async def _read_replies(self) -> None:
        while True:
            parts = await self.sock.recv_multipart(copy=False)
            try:
                msg, rid = decode([p.buffer for p in parts], self.max_bytes)
            except DeltapsError as exc:
                log.warning("bad reply from %s dropped: %s", self.address, exc)
                continue
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _watch_connection(self) -> None:
        while True:
            event = parse_monitor_message(await self.monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected = True
                self._up.set()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = False
                self._up.clear()
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(Unreachable(f"connection to {self.address} dropped "
                                                      "while waiting for a reply"))

    async def request(self, msg: Message, timeout: float = 10.0,
                      connect_timeout: float | None = None) -> Message:
        """The reply to `msg`; raises Timeout, Unreachable, or RemoteError for an error reply.
        With `connect_timeout` (and `monitor`), waits at most that long for a connection."""
        if self.closed:
            raise Unreachable(f"channel to {self.address} is closed")
        self.start()
        if connect_timeout is not None and self.monitor is not None and not self.connected:
            try:
                await asyncio.wait_for(self._up.wait(), connect_timeout)
            except asyncio.TimeoutError:
                raise Unreachable(f"no connection to {self.address} within "
                                  f"{connect_timeout:.2f}s") from None
        rid = self._next_rid
        self._next_rid += 1
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        frames = encode(msg, rid)

        async def exchange():
            await self.sock.send_multipart(frames, copy=False)
            return await fut

        try:
            reply = await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"no reply from {self.address} within {timeout:.1f}s") from None
        finally:
            self._pending.pop(rid, None)
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply.code, f"{self.address}: {reply.message}")
        return reply

    def close(self) -> None:
        """Cancel the reader tasks and close the sockets (safe to call twice)."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Unreachable(f"channel to {self.address} closed"))
        _close_socket(self.sock, self.monitor)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        self.close()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
