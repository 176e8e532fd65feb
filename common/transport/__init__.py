"""ZeroMQ transport, and the only package that imports zmq.

One module per job: `sockets` (contexts, socket options, `Endpoint`), `server`
(`RequestServer`, the ROUTER a node answers on), `curve` (CurveZMQ keys and ZAP), `dealer`
(what both client channels share), `channel` (`Channel`, blocking), `aio` (`AsyncChannel`,
asyncio), `pubsub` (`Publisher`, `Subscriber`) and `loop` (`EventLoop`). Callers import the
names from here.

Each name is imported from its module on first use (PEP 562), so a process that needs only
a blocking channel (a worker, `deltaps status`) does not pay for asyncio or the server.
"""
from __future__ import annotations

import importlib

_HOME = {"AsyncChannel": "aio", "Channel": "channel", "readable": "channel",
         "writable": "channel", "EventLoop": "loop", "Timer": "loop", "Publisher": "pubsub",
         "Subscriber": "pubsub", "Handler": "server", "RequestServer": "server",
         "COPY_THRESHOLD": "sockets", "Endpoint": "sockets", "Unreachable": "sockets",
         "async_context": "sockets", "bind_address": "sockets", "context": "sockets",
         "poll_ms": "sockets", "Curve": "curve", "KeyPair": "curve", "client_key": "curve",
         "read_key_pair": "curve", "read_public_key": "curve", "refusals": "curve",
         "use_curve": "curve", "write_key_pair": "curve"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    try:
        module = _HOME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
