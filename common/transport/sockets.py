"""The zmq contexts, socket creation and closing, and the `Endpoint` every transport object is.

Everything that creates or tunes a raw zmq socket lives here, so the socket options a node
depends on (LINGER 0, the copy threshold, IMMEDIATE, monitors) are set in one place. Transport
objects never hand their raw socket out: `Endpoint` gives callers and the event loop what they
need of it (is a message waiting, wait for one, the descriptor to `select` on).
"""
from __future__ import annotations

import math

import zmq

from common.errors import DeltapsError
from common.transport.curve import secure

# Frames below this size are copied when sent: zero-copy costs a tracker object and a wake-up of
# pyzmq's garbage-collector thread per frame, which only pays off for multi-megabyte arrays.
COPY_THRESHOLD = 4 << 20
MONITOR_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
# A connecting socket (DEALER, SUB) pings its peer every HEARTBEAT_IVL_MS and drops the
# connection when nothing came back for HEARTBEAT_TIMEOUT_MS, then reconnects, each attempt
# given up after CONNECT_TIMEOUT_MS. Without them a connection whose packets are lost (a cut
# link, a partition) stays open on Linux for ~15 minutes, and what was sent on it waits for a
# TCP retransmission whose back-off after 30 s of loss is another ~25 s; a pending connect
# waits for a SYN retry as long. The peer's zmq I/O thread answers pings, so a busy node is
# not mistaken for a dead one.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 4000
CONNECT_TIMEOUT_MS = 500
# as plain ints: pyzmq turns an enum member given to getsockopt into its option number and
# combines PollEvent flags in Python, which `waiting()` (every endpoint, every loop pass) pays
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def poll_ms(seconds: float) -> int:
    """A zmq poll timeout in whole milliseconds, rounded up (zmq truncates a float): a wait
    of 0.4 ms must not become a poll(0), or a loop waiting for a timer spins for its last
    millisecond, burning a core and adding a millisecond to the tail of replies."""
    return max(0, math.ceil(seconds * 1000.0))


def context() -> zmq.Context:
    return zmq.Context.instance()


_async_context: zmq.asyncio.Context | None = None


def async_context() -> zmq.asyncio.Context:
    """An asyncio view of the process's one zmq context (inproc endpoints are shared).
    zmq.asyncio (and asyncio) is imported here, by the processes that use it."""
    import zmq.asyncio
    global _async_context
    if _async_context is None or _async_context.underlying != context().underlying:
        _async_context = zmq.asyncio.Context.shadow(context().underlying)
    return _async_context


class Unreachable(DeltapsError):
    """The peer has no live connection, or the connection carrying a request dropped."""

    code = "unreachable"


def new_socket(kind: int, ctx=None, inproc: bool = False) -> zmq.Socket:
    """A socket of `kind` that drops unsent messages on close and copies small frames, and
    speaks CURVE when the process has turned it on (common/transport/curve.py). An `inproc`
    socket talks only to this process (no handshake runs over inproc), so it needs no key:
    a shard's own HTTP thread asks its loop for readiness without a client key."""
    sock = (ctx or context()).socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.copy_threshold = COPY_THRESHOLD
    if inproc:
        return sock
    if kind in (zmq.DEALER, zmq.SUB):
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    try:
        secure(sock, kind)
    except DeltapsError:
        sock.close(0)
        raise
    return sock


def client_socket(ctx, address: str, immediate: bool, monitor: bool):
    """(DEALER connected to `address`, its monitor socket or None); the monitor is attached
    before connecting so that no connection event is missed."""
    sock = new_socket(zmq.DEALER, ctx, inproc=address.startswith("inproc://"))
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
    mon = sock.get_monitor_socket(MONITOR_EVENTS) if monitor else None
    sock.connect(address)
    return sock, mon


def close_socket(sock: zmq.Socket, monitor: zmq.Socket | None = None) -> None:
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


class Endpoint:
    """What callers and the event loop may know of a transport object's socket.

    `waiting()` and `fileno()` are all `EventLoop.watch` needs; `poll` is for callers that
    wait on one endpoint by themselves (a scripted peer in a test, a benchmark's server).
    """

    _sock: zmq.Socket

    def waiting(self) -> bool:
        """Whether a message is waiting to be read (cheap; no poll)."""
        return bool(self._sock.getsockopt(_EVENTS) & _POLLIN)

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether a message is waiting, after waiting up to `timeout` seconds for one."""
        return bool(self._sock.poll(poll_ms(timeout)))

    def fileno(self) -> int:
        """A file descriptor that turns readable when the socket's state may have changed
        (ZMQ_FD, edge-triggered: check `waiting()` after every wake-up). Lets a caller
        wait with `select` at sub-millisecond resolution (zmq polls in whole milliseconds)."""
        return self._sock.getsockopt(zmq.FD)
