"""`AsyncChannel`: the asyncio face of `Dealer`, for many concurrent requests on one socket.

Used by the asyncio serving client and by a replica's HTTP thread, where hundreds of requests
may be in flight on one connection: each reply is routed to its request's future by request
id, instead of every caller waiting on the socket.
"""
from __future__ import annotations

import asyncio
import logging

from common.errors import MalformedMessage, Timeout
from common.messages import Message
from common.transport.dealer import DOWN, UP, Dealer
from common.transport.sockets import Unreachable, async_context

log = logging.getLogger(__name__)


class AsyncChannel(Dealer):
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
        super().__init__(async_context(), address, max_bytes, immediate, monitor)
        self.connected = monitor is False  # without a monitor: assumed
        self._up: asyncio.Event | None = None
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
            if self._monitor is not None:
                self._tasks.append(asyncio.ensure_future(self._watch_connection()))

    async def _read_replies(self) -> None:
        while True:
            parts = await self._sock.recv_multipart(copy=False)
            try:
                msg, rid = self._decode_reply(parts)
            except MalformedMessage as exc:
                log.warning("%s (dropped)", exc)
                continue
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _watch_connection(self) -> None:
        while True:
            event = self._connection_event(await self._monitor.recv_multipart())
            if event == UP:
                self.connected = True
                self._up.set()
            elif event == DOWN:
                self.connected = False
                self._up.clear()
                self._fail_pending(self._dropped)

    def _fail_pending(self, error) -> None:
        """Fail every request in flight with a fresh exception from `error()` each."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error())

    async def request(self, msg: Message, timeout: float = 10.0,
                      connect_timeout: float | None = None) -> Message:
        """The reply to `msg`; raises Timeout, Unreachable, or RemoteError for an error reply.
        With `connect_timeout` (and `monitor`), waits at most that long for a connection."""
        if self.closed:
            raise Unreachable(f"channel to {self.address} is closed")
        self.start()
        if connect_timeout is not None and self._monitor is not None and not self.connected:
            try:
                await asyncio.wait_for(self._up.wait(), connect_timeout)
            except asyncio.TimeoutError:
                raise Unreachable(f"no connection to {self.address} within "
                                  f"{connect_timeout:.2f}s") from None
        rid, frames = self._new_request(msg)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut

        async def exchange():
            await self._sock.send_multipart(frames, copy=False)
            return await fut

        try:
            reply = await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"no reply from {self.address} within {timeout:.1f}s") from None
        finally:
            self._pending.pop(rid, None)
        return self.unwrap(reply)

    def close(self) -> None:
        """Cancel the reader tasks and close the sockets (safe to call twice)."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        self._fail_pending(lambda: Unreachable(f"channel to {self.address} closed"))
        self._close_sockets()

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        self.close()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
