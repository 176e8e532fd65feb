"""The Node base, driven in-process: a node run in a thread answers hello, status and its own
ops, and stops on a shutdown request or on `stop()` from another thread."""
from __future__ import annotations

import logging
import threading

import pytest

from common.messages import (ChecksumReply, ChecksumRequest, Hello, Ok, PROTOCOL, Shutdown,
                             StatusRequest)
from common.config import load_spec
from common.node import Node
from common.transport import Channel


class EchoNode(Node):
    """The smallest node: one op of its own, one timer."""

    role = "echo"
    log = logging.getLogger("deltaps.test.echo")

    def __init__(self, spec):
        super().__init__(spec, 3, "tcp://127.0.0.1:0", {"checksums": self.on_checksums})
        self.ticks = 0
        self.stopped = self.closed = False
        self.loop.every(0.01, self.tick)

    def tick(self):
        self.ticks += 1

    def on_checksums(self, _msg):
        return ChecksumReply({"ticks": self.ticks})

    def hello_models(self):
        return {"echo": {"bits": 0}}

    def status(self):
        return {"state": "serving", **super().status()}

    def stopping(self):
        self.stopped = True

    def close(self):
        super().close()
        self.closed = True


@pytest.fixture
def running():
    node = EchoNode(load_spec(text=""))
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    ch = Channel(node.server.address)
    yield node, thread, ch
    ch.close()
    node.stop()
    thread.join(5)


def test_a_node_in_a_thread_answers_the_common_ops_and_its_own(running):
    node, _thread, ch = running
    hello = ch.request(Hello(PROTOCOL, "worker"), 5)
    assert (hello.role, hello.index, hello.models) == ("echo", 3, {"echo": {"bits": 0}})
    info = ch.request(StatusRequest(), 5).info
    assert list(info)[:5] == ["role", "index", "pid", "cpus", "address"]
    assert info["role"] == "echo" and info["address"] == node.server.address
    assert info["state"] == "serving" and "uptime_s" in info
    assert sorted(node.handlers) == ["checksums", "hello", "shutdown", "status"]
    assert ch.request(ChecksumRequest(), 5).sums["ticks"] >= 0


def test_a_shutdown_request_stops_the_node_and_closes_it(running):
    node, thread, ch = running
    assert isinstance(ch.request(Shutdown(), 5), Ok)
    thread.join(5)
    assert not thread.is_alive() and node.stopped and node.closed


def test_stop_from_another_thread(running):
    node, thread, _ch = running
    node.stop()
    thread.join(5)
    assert not thread.is_alive() and node.stopped and node.closed
