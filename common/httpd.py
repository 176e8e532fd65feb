"""`MetricsServer`: a node's monitoring endpoint (aiohttp, in its own thread).

    GET /metrics   the node's registry in Prometheus' text format
    GET /healthz   200 while the node's loop answers a status request (liveness)
    GET /readyz    200 while the node says it serves ("serving" shard, "ready" replica), else 503

Why aiohttp and not prometheus_client's `start_http_server`: the probes must ask the node's
single-threaded loop whether it answers, which the replica's REST server already does with an
asyncio DEALER over inproc; one small aiohttp app does all three paths the same way, stops
cleanly on demand (the in-process cluster stops nodes as threads), and adds no dependency.
A node without a loop to ask (a training worker) passes no backend: it is alive and ready
while its process serves the endpoint.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from aiohttp import web

from common.errors import DeltapsError
from common.messages import StatusRequest
from common.telemetry import CONTENT_TYPE, NodeMetrics
from common.transport import AsyncChannel

log = logging.getLogger("deltaps.metrics")
PROBE_TIMEOUT_S = 2.0
READY_STATES = ("serving", "ready")


class MetricsServer:
    """/metrics, /healthz and /readyz for one node on (host, port); port 0 picks a free one."""

    def __init__(self, host: str, port: int, metrics: NodeMetrics, backend: str | None = None):
        self.host, self.port = host, port
        self.metrics = metrics
        self.backend = backend
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.channel: AsyncChannel | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "MetricsServer":
        """Start the thread and wait until the port is bound; raises if it cannot be."""
        self.thread = threading.Thread(target=self._run, name="deltaps-metrics", daemon=True)
        self.thread.start()
        if not self._started.wait(timeout):
            raise DeltapsError(f"metrics server on {self.host}:{self.port} did not start")
        if self._failure is not None:
            raise DeltapsError(f"cannot serve metrics on {self.host}:{self.port}: "
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
        app = web.Application()
        app.router.add_get("/metrics", self.scrape)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
            if runner.addresses:  # the port the OS chose for port 0
                self.port = runner.addresses[0][1]
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
            if self.channel is not None:
                await self.channel.aclose()

    async def scrape(self, _request: web.Request) -> web.Response:
        # on this thread's own loop: a scrape waits for nothing but the node's numbers
        return web.Response(body=self.metrics.text(), headers={"Content-Type": CONTENT_TYPE})

    async def _state(self) -> str | None:
        """The node's state as its loop reports it, or None if the loop does not answer."""
        if self.channel is None:
            return "serving"
        try:
            reply = await self.channel.request(StatusRequest(), PROBE_TIMEOUT_S)
        except DeltapsError as exc:
            log.warning("health probe: the node's loop did not answer: %s", exc)
            return None
        return reply.info.get("state", "")

    async def healthz(self, _request: web.Request) -> web.Response:
        state = await self._state()
        if state is None:
            return web.json_response({"status": "unresponsive"}, status=503)
        return web.json_response({"status": "alive", "state": state})

    async def readyz(self, _request: web.Request) -> web.Response:
        state = await self._state()
        ready = state in READY_STATES
        return web.json_response({"ready": ready, "state": state}, status=200 if ready else 503)
