"""ZeroMQ transport, and the only package that imports zmq.

One module per job: `sockets` (contexts, socket options, `Endpoint`), `server`
(`RequestServer`, the ROUTER a node answers on), `curve` (CurveZMQ keys and ZAP), `dealer`
(what both client channels share), `channel` (`Channel`, blocking), `aio` (`AsyncChannel`,
asyncio), `pubsub` (`Publisher`, `Subscriber`) and `loop` (`EventLoop`). Callers import the names from here.
"""
from common.transport.aio import AsyncChannel
from common.transport.channel import Channel, readable, writable
from common.transport.curve import (Curve, KeyPair, client_key, read_key_pair,
                                    read_public_key, refusals, use_curve, write_key_pair)
from common.transport.loop import EventLoop, Timer
from common.transport.pubsub import Publisher, Subscriber
from common.transport.server import Handler, RequestServer
from common.transport.sockets import (COPY_THRESHOLD, Endpoint, Unreachable, async_context,
                                      bind_address, context, poll_ms)

__all__ = ["AsyncChannel", "COPY_THRESHOLD", "Channel", "Curve", "Endpoint", "EventLoop", "Handler",
           "KeyPair", "Publisher", "RequestServer", "Subscriber", "Timer", "Unreachable", "async_context",
           "bind_address", "client_key", "context", "poll_ms", "read_key_pair", "read_public_key",
           "readable", "refusals", "use_curve", "writable", "write_key_pair"]
