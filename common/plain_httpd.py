"""`PlainMetricsServer`: the monitoring endpoint of a node with no loop to ask (a training
worker), on the standard library's HTTP server in its own thread.

    GET /metrics   the node's registry in Prometheus' text format
    GET /healthz   200: the process serves the endpoint, so it is alive
    GET /readyz    200: likewise ready

Why not `common.httpd.MetricsServer` (aiohttp): a worker's probes have no node loop to ask,
so they need none of aiohttp's asyncio machinery, and importing aiohttp (with its client and
TLS setup) costs a `deltaps train` process about half a second before its first batch, which
is most of what a short run takes. `http.server` answers a scrape as well and loads in a
fraction of that. Same interface (`start`, `url`, `stop`), same paths, same answers.

The address is bound by `start`, at once; the HTTP server and the node's metrics (Prometheus'
client) are made when the first request comes (`metrics` may be a function making them), so
a worker that is never scraped, or not yet, pays for neither: importing them is tens of ms of
the interpreter a training run shares with its own threads.
"""
from __future__ import annotations

import json
import os
import selectors
import socket
import threading

from common.errors import DeltapsError


def parse_listen(text: str) -> tuple[str, int]:
    """"HOST:PORT" or "http://HOST:PORT" -> (host, port)."""
    rest = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class PlainMetricsServer:
    """/metrics, /healthz and /readyz for one node on (host, port); port 0 picks a free one."""

    THREAD = "deltaps-metrics"

    def __init__(self, host: str, port: int, metrics):
        """`metrics`: the node's `common.telemetry.NodeMetrics`, or a function making it (called
        once, for the first request)."""
        self.host, self.port = host, port
        self._metrics = metrics
        self._listening: socket.socket | None = None
        self._server = None  # the HTTP server around the listening socket, once asked
        self.thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None  # a pipe: a byte written ends the serving

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "PlainMetricsServer":
        """Bind (so port 0 resolves before this returns) and serve from a daemon thread;
        raises DeltapsError if the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind((self.host, self.port))
            listening.listen(16)
        except OSError as exc:
            listening.close()
            raise DeltapsError(f"cannot serve metrics on {self.host}:{self.port}: {exc}") from None
        self._listening = listening
        self.port = listening.getsockname()[1]
        self._wake = os.pipe()
        self.thread = threading.Thread(target=self._serve, name=self.THREAD, daemon=True)
        self.thread.start()
        return self

    def _serve(self) -> None:
        """Answer requests until `stop` writes to the wake pipe. The thread sleeps in select
        until one of the two is readable, where `serve_forever` would wake every poll interval
        to look at its stop flag: a worker's Python threads share one GIL, and a poller's
        hundred wake-ups a second each take it from the threads that train."""
        listening, wake = self._listening, self._wake[0]
        with selectors.DefaultSelector() as selector:
            selector.register(listening, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                for key, _events in selector.select():
                    if key.fileobj == wake:
                        return
                    if self._server is None:
                        self._server = _http_server(listening, self._node_metrics())
                    self._server.handle_request()  # the socket is readable: no wait

    def _node_metrics(self):
        if callable(self._metrics):
            self._metrics = self._metrics()
        return self._metrics

    def stop(self, timeout: float = 5.0) -> None:
        if self._wake is not None and self.thread is not None and self.thread.is_alive():
            os.write(self._wake[1], b"x")
            self.thread.join(timeout)
        if self._listening is not None:
            self._listening.close()  # the HTTP server's socket, when there is one
        if self._wake is not None and not (self.thread and self.thread.is_alive()):
            for fd in self._wake:
                os.close(fd)
            self._wake = None


def _http_server(listening: socket.socket, metrics):
    """A threading HTTP server answering the endpoint's paths on the bound, listening socket
    (the standard library's, imported here: on the first request)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from common.telemetry import CONTENT_TYPE

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.text(), CONTENT_TYPE)
            elif path == "/healthz":
                self._json(200, {"status": "alive", "state": "serving"})
            elif path == "/readyz":
                self._json(200, {"ready": True, "state": "serving"})
            else:
                self._json(404, {"error": f"no such path: {path}"})

        def _json(self, status: int, body: dict) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:  # no line per scrape on stderr
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = listening.family

    server = Server(listening.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listening
    server.server_address = listening.getsockname()
    return server
