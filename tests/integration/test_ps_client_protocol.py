"""The worker's PS client against a scripted shard: resends after a stale pull, in order."""
from __future__ import annotations

import threading

import numpy as np

from common import messages as m
from common.config import NodeInfo
from common.errors import StalePull
from common.transport import RequestServer
from worker.ps_client import PSClient


def test_stale_pull_makes_the_client_send_the_lost_push_then_the_pull_again():
    seen: list[tuple[str, int]] = []
    applied = {"w": 0}
    first_push_dropped = []

    def on_push(msg):
        seen.append(("push", msg.push_no))
        applied["w"] = max(applied["w"], msg.push_no)
        return m.PushAck(msg.model, 1)

    def on_pull(msg):
        seen.append(("pull", msg.after))
        if applied["w"] < msg.after:
            raise StalePull("push not arrived")
        return m.PullReply(msg.model, 1, np.full(msg.keys.size, applied["w"], np.float32))

    handlers = {"hello": lambda msg: m.HelloReply(m.PROTOCOL, "shard", 0, 1, {"ctr": {"bits": 8}}),
                "push": on_push, "pull": on_pull}
    server = RequestServer("tcp://127.0.0.1:0", handlers, 1 << 20)
    stop = threading.Event()

    def pump():
        while not stop.is_set():
            if server.sock.poll(20):
                parts = server.sock.recv_multipart(copy=False)
                msg_op = bytes(parts[1].buffer[:64])
                if b"push" in msg_op and not first_push_dropped:
                    first_push_dropped.append(True)  # lost in a dying connection
                    continue
                server.sock.send_multipart([parts[0]] + list(_answer(server, parts[1:])))

    def _answer(srv, frames):
        from common.wire import encode
        reply, rid = srv.dispatch([f.buffer for f in frames])
        return encode(reply, rid)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        client = PSClient([NodeInfo("shard", 0, server.address)], timeout=20, retry_s=5.0,
                          worker_id="w")
        keys = np.array([1, 2], np.uint64)
        push = client.push_async("ctr", keys, np.ones(2, np.float32))
        pull = client.pull_async("ctr", keys)
        values = pull.wait()
        push.wait()
        assert values.tolist() == [1.0, 1.0]  # the answer includes push 1
        assert seen[:3] == [("pull", 1), ("push", 1), ("pull", 1)]  # refused, then in order
        assert client.retries >= 2
        client.close()
    finally:
        stop.set()
        thread.join(5)
        server.close()
