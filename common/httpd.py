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

import logging

from aiohttp import web

from common.aiothread import ThreadedApp
from common.errors import DeltapsError
from common.messages import StatusRequest
from common.telemetry import CONTENT_TYPE, NodeMetrics

log = logging.getLogger("deltaps.metrics")
PROBE_TIMEOUT_S = 2.0
READY_STATES = ("serving", "ready")


class MetricsServer(ThreadedApp):
    """/metrics, /healthz and /readyz for one node on (host, port); port 0 picks a free one."""

    WHAT = "metrics"
    THREAD = "deltaps-metrics"

    def __init__(self, host: str, port: int, metrics: NodeMetrics, backend: str | None = None):
        super().__init__(host, port, backend)
        self.metrics = metrics

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.scrape)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

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
