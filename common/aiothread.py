"""An aiohttp app served from its own thread and event loop, beside a node's core loop.

Why a base: the replica's REST server and every node's metrics endpoint run the same way (a
daemon thread with its own asyncio loop, bound before `start` returns so port 0 resolves,
stopped by setting an event from another thread, an optional asyncio DEALER to the node's
core over inproc); each subclass supplies only its `app()`.
"""
from __future__ import annotations

import asyncio
import ssl
import threading

from aiohttp import web

from common.errors import DeltapsError
from common.transport import AsyncChannel


class ThreadedApp:
    """Serves `app()` on (host, port); port 0 picks a free one, read back from `port`."""

    WHAT = "HTTP"  # what error messages call it
    THREAD = "deltaps-http"

    def __init__(self, host: str, port: int, backend: str | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        self.host, self.port = host, port
        self.backend = backend
        self.ssl_context = ssl_context
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.channel: AsyncChannel | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def start(self, timeout: float = 10.0):
        """Start the thread and wait until the port is bound; raises if it cannot be."""
        self.thread = threading.Thread(target=self._run, name=self.THREAD, daemon=True)
        self.thread.start()
        if not self._started.wait(timeout):
            raise DeltapsError(f"{self.WHAT} server on {self.host}:{self.port} did not start")
        if self._failure is not None:
            raise DeltapsError(f"cannot serve {self.WHAT} on {self.host}:{self.port}: "
                               f"{self._failure}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop is not None and self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(timeout)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._failure = exc
            self._started.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        if self.backend:
            self.channel = AsyncChannel(self.backend)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True,
                               ssl_context=self.ssl_context)
            await site.start()
            if runner.addresses:  # the port the OS chose for port 0
                self.port = runner.addresses[0][1]
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
            if self.channel is not None:
                await self.channel.aclose()
