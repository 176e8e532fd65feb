"""`Node`: what every deltaps node process is, whatever state it serves.

A node answers requests on one `RequestServer` through a visible `op -> method` table, runs
one `EventLoop` (so its state needs no locks), and speaks the same hello, status and shutdown
as every other node. Those are held here once; a subclass (the shard, the replica, later
nodes) declares its own ops and wires its state to the loop.

It lives in `common/` beside the transport, not inside it: the transport only moves messages,
while a node knows what some of them mean (who it is in hello, the fields every status
carries).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

from common.messages import (Hello, HelloReply, Message, Ok, PROTOCOL, Shutdown, StatusReply,
                             StatusRequest)
from common.config import ClusterSpec
from common.cpus import current_cpus
from common.httpd import MetricsServer
from common.telemetry import NodeMetrics
from common.transport import EventLoop, RequestServer, refusals
from common.transport.curve import current as current_curve


class Node:
    """Base of the node classes: handler table, hello, status basics, shutdown, run, close.

    A subclass sets `role` and `log`, passes its own handlers (`{"pull": self.on_pull, ...}`)
    to `__init__`, which adds hello, status and shutdown, and overrides `hello_models`,
    `status`, `starting`, `stopping` and `close` as it needs. Everything a handler or timer
    touches runs on the one loop thread.
    """

    role = "node"
    log = logging.getLogger("deltaps.node")

    def __init__(self, spec: ClusterSpec, index: int, address: str,
                 handlers: dict[str, Callable[[Message], Message]],
                 metrics_listen: tuple[str, int] | None = None):
        self.spec = spec
        self.index = index
        self.started = time.time()
        self.metrics = NodeMetrics(self.role, index)
        self.handlers = {op: self.metrics.instrument(op, handler) for op, handler in {
            "hello": self.on_hello,
            **handlers,
            "status": self.on_status,
            "shutdown": self.on_shutdown,
        }.items()}
        self.server = RequestServer(address, self.handlers, spec.max_message_bytes)
        self.metrics.add_collector(lambda: self.metrics.error_replies(self.server.errors))
        self.metrics_server: MetricsServer | None = None
        if metrics_listen is not None:  # probes ask the loop over inproc, as HTTP reads do
            backend = self.server.bind(f"inproc://deltaps-{self.role}-{index}-{id(self):x}-probe")
            self.metrics_server = MetricsServer(*metrics_listen, self.metrics, backend)
        self.loop = EventLoop()
        self.loop.watch(self.server, self.server.handle_ready)

    # --- the ops every node answers -----------------------------------------------------------

    def on_hello(self, msg: Hello) -> HelloReply:
        """Who this node is and what it holds. A peer of another protocol version never gets
        here: the codec refuses every message whose header speaks another version."""
        return HelloReply(PROTOCOL, self.role, self.index, self.spec.shards, self.hello_models())

    def hello_models(self) -> dict:
        """What hello tells about each model this node holds (name -> {"bits": ..., ...})."""
        return {}

    def on_status(self, _msg: StatusRequest) -> StatusReply:
        return StatusReply({**self.identity(), **self.status(), "security": self.security()})

    def identity(self) -> dict:
        """The status fields every node reports first: who and where it is."""
        return {"role": self.role, "index": self.index, "pid": os.getpid(),
                "cpus": current_cpus(), "address": self.server.address,
                "metrics_address": self.metrics_server.url if self.metrics_server else ""}

    def status(self) -> dict:
        """The node's own status fields, after `identity()`."""
        return {"uptime_s": self.uptime_s()}

    def security(self) -> dict:
        """Whether CURVE is on, handshakes refused (unknown keys, wrong role on the update
        stream; counted per process) and requests refused by role, by op. Never a key."""
        return {"curve": current_curve() is not None,
                "refused_connections": dict(refusals.counts),
                "forbidden": dict(self.server.forbidden)}

    def uptime_s(self) -> float:
        return round(time.time() - self.started, 1)

    def on_shutdown(self, _msg: Shutdown) -> Ok:
        self.stop()
        return Ok()

    # --- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Make `run()` return (after `stopping()` and `close()`); callable from any thread,
        takes effect within the loop's longest sleep."""
        self.loop.stop()

    def starting(self) -> None:
        """Runs on the loop thread just before the loop starts."""

    def stopping(self) -> None:
        """Runs on the loop thread once the loop has stopped, before `close()`."""

    def run(self) -> None:
        """Serve until shutdown, SIGTERM or SIGINT (signals only when run in the main thread;
        in another thread, stop it with `stop()` or a shutdown request)."""
        self.loop.install_signal_handlers()
        try:
            if self.metrics_server is not None:
                self.metrics_server.start()
                self.log.info("%s %d serving /metrics on %s", self.role, self.index,
                              self.metrics_server.url)
            self.starting()
            self.loop.run()
        finally:
            try:
                self.stopping()
            finally:
                self.close()
                self.log.info("%s %d stopped", self.role, self.index)

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.server.close()
