"""The replica's REST endpoint, shaped like TensorFlow Serving's (aiohttp).

    POST /v1/models/{name}:predict   {"instances": [{field: value, ...}, ...]}
         -> 200 {"predictions": [p, ...], "model_version": [seq per shard], "staleness_ms": x}
    GET  /v1/models/{name}           -> 200 {"model_version_status": [{"version", "state", ...}],
                                             "model_version": [...], "staleness_ms": x}
    GET  /healthz                    -> 200 while the replica's core loop answers (liveness)
    GET  /readyz                     -> 200 when every model is ready, else 503 (readiness)

Errors are ``{"error": "..."}`` with 400 (bad JSON, wrong types, missing "instances"),
404 (unknown model or path), 405, 413 (body over the cluster's max_message_bytes), 503 (model
not ready, or the replica too busy to answer in time) or 500.

The server runs in its own thread with its own asyncio loop. It never touches a model: every
request becomes a `Predict`/`StatusRequest` sent over an inproc DEALER (`AsyncChannel`) to the
replica's own request socket, so the replica's single-threaded loop stays the only owner of
the weights.
"""
from __future__ import annotations

import hmac
import json
import logging
import ssl
from pathlib import Path

from aiohttp import web

from common.aiothread import ThreadedApp
from common.errors import ConfigError, DeltapsError, RemoteError, Timeout
from common.messages import Message, Predict, StatusRequest
from common.plain_httpd import parse_listen  # noqa: F401 (where the nodes import it from)

log = logging.getLogger("deltaps.http")
CORE_TIMEOUT_S = 10.0  # how long a request may wait for the replica's loop
HEALTH_TIMEOUT_S = 2.0
OPEN_PATHS = ("/healthz", "/readyz")  # probes answer without a token: they reveal no weights
STATUS_BY_CODE = {"unknown_model": 404, "not_ready": 503, "timeout": 503, "unreachable": 503,
                  "invalid_instance": 400, "invalid_value": 400, "malformed": 400}


class Busy(DeltapsError):
    """The replica's loop did not answer an HTTP request in time."""

    code = "timeout"


def http_security(sec) -> dict:
    """HttpServer's `token` and `ssl_context` from a spec's [security] (files read once, at
    start; a missing or empty file is an error, never an open endpoint)."""
    out: dict = {"token": None, "ssl_context": None}
    try:
        if sec.http_token_file:
            out["token"] = Path(sec.http_token_file).read_text().strip()
            if not out["token"]:
                raise ConfigError(f"[security] http_token_file {sec.http_token_file} is empty")
        if sec.http_tls_cert_file:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(sec.http_tls_cert_file, sec.http_tls_key_file)
            out["ssl_context"] = ctx
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[security] HTTP token or TLS files: {exc}") from None
    return out


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class HttpServer(ThreadedApp):
    """aiohttp app in a background thread, forwarding to the replica at `backend` (inproc)."""

    def __init__(self, host: str, port: int, backend: str, max_body: int,
                 timeout: float = CORE_TIMEOUT_S, token: str | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        super().__init__(host, port, backend, ssl_context)
        self._token = token.encode() if token else None
        self.unauthorized = 0  # requests refused for a missing or wrong bearer token
        self.max_body = max_body
        self.timeout = timeout

    # --- the app ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[self._errors,
                                                                          self._auth])
        app.router.add_post(r"/v1/models/{name:[^/:]+}:predict", self.predict)
        app.router.add_get(r"/v1/models/{name:[^/:]+}", self.model_status)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as exc:  # 404 / 405 / 413 from aiohttp itself
            if exc.status < 400:
                raise
            reason = exc.reason
            if exc.status == 413:
                reason = f"request body exceeds the limit of {self.max_body} bytes"
            return _error(exc.status, reason)
        except RemoteError as exc:
            return _error(STATUS_BY_CODE.get(exc.remote_code, 500), _strip_address(str(exc)))
        except DeltapsError as exc:
            return _error(STATUS_BY_CODE.get(exc.code, 500), str(exc))
        except Exception as exc:
            log.exception("HTTP handler failed")
            return _error(500, f"{type(exc).__name__}: {exc}")

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        """With a token configured, 401 unless `Authorization: Bearer TOKEN` (compared in
        constant time) — before the body is read or the replica asked."""
        if self._token is None or request.path in OPEN_PATHS:
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                  self._token):
            self.unauthorized += 1
            return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="deltaps"'})
        return await handler(request)

    async def _ask(self, msg: Message, timeout: float | None = None) -> Message:
        try:
            return await self.channel.request(msg, timeout or self.timeout)
        except Timeout:
            raise Busy(f"the replica did not answer within {timeout or self.timeout:.0f}s") from None

    async def predict(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(doc, dict) or "instances" not in doc:
            return _error(400, 'request body must be a JSON object with an "instances" list')
        instances = doc["instances"]
        if not isinstance(instances, list):
            return _error(400, f'"instances" must be a list, got {type(instances).__name__}')
        try:
            msg = Predict(request.match_info["name"], instances)
            reply = await self._ask(msg)
        except (OverflowError, TypeError, ValueError) as exc:  # not encodable (huge integers)
            return _error(400, f"instances cannot be read: {exc}")
        return web.json_response({"predictions": reply.probabilities.tolist(),
                                  "model_version": reply.version,
                                  "staleness_ms": reply.staleness_ms})

    async def _status(self, timeout: float | None = None) -> dict:
        return (await self._ask(StatusRequest(), timeout)).info

    async def model_status(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        info = await self._status()
        st = info["models"].get(name)
        if st is None:
            return _error(404, f"unknown model {name!r}; this replica serves "
                               f"{sorted(info['models'])}")
        state = "AVAILABLE" if st["ready"] else "LOADING"
        return web.json_response({
            "model_version_status": [{
                "version": str(sum(max(0, v) for v in st["version"])),
                "state": state,
                "status": {"error_code": "OK",
                           "error_message": "" if st["ready"] else "syncing from the shards"},
            }],
            "model_version": st["version"],
            "staleness_ms": st["staleness_ms"],
        })

    async def healthz(self, _request: web.Request) -> web.Response:
        info = await self._status(HEALTH_TIMEOUT_S)
        return web.json_response({"status": "alive", "state": info["state"]})

    async def readyz(self, _request: web.Request) -> web.Response:
        info = await self._status(HEALTH_TIMEOUT_S)
        ready = {name: st["ready"] for name, st in info["models"].items()}
        status = 200 if all(ready.values()) else 503
        return web.json_response({"ready": status == 200, "models": ready}, status=status)


def _strip_address(text: str) -> str:
    """Error replies are prefixed with the peer's address; over HTTP that is our inproc name."""
    head, sep, rest = text.partition(": ")
    return rest if sep and head.startswith("inproc://") else text
