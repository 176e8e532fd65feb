"""The worker's PS client against a scripted shard: after a missing push it resends in order."""
from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from common.messages import ErrorReply, HelloReply, PROTOCOL, PullReply, PushAck
from common.config import NodeInfo
import pytest

from common.errors import DeltapsError, MissingPush
from common.wire import decode, encode
from tests.rawpeer import RawRouter
from worker.ps_client import PSClient

KEYS = np.array([1, 2], np.uint64)


@contextlib.contextmanager
def shard_that_loses_the_first_push(forget_after: int | None = None):
    """A one-shard server that checks `after` like a real shard and drops the first push it
    receives, as a connection dying under it would; yields the requests it saw. With
    `forget_after`, it loses everything once it has applied that push (a wiped disk)."""
    seen: list[tuple[str, int]] = []
    applied = {"w": 0}

    def on_push(msg):
        seen.append(("push", msg.push_no))
        if msg.push_no <= applied["w"]:
            return PushAck(msg.model, 1)
        if applied["w"] < msg.after:
            raise MissingPush("push not arrived")
        applied["w"] = 0 if msg.push_no == forget_after else msg.push_no
        return PushAck(msg.model, 1)

    def on_pull(msg):
        seen.append(("pull", msg.after))
        if applied["w"] < msg.after:
            raise MissingPush("push not arrived")
        return PullReply(msg.model, 1, np.full((msg.keys.size, 1), applied["w"], np.float32))

    handlers = {"hello": lambda msg: HelloReply(PROTOCOL, "shard", 0, 1, {"ctr": {"bits": 8}}),
                "push": on_push, "pull": on_pull}
    server = RawRouter()
    stop = threading.Event()
    dropped = []

    def answer(frames):
        msg, rid = decode(frames, 1 << 20)
        try:
            return handlers[msg.op](msg), rid
        except DeltapsError as exc:  # as a node does: the error goes back as a reply
            return ErrorReply(exc.code, str(exc)), rid

    def pump():
        while not stop.is_set():
            if server.poll(0.02):
                identity, frames = server.recv()
                if b"push" in bytes(frames[0][:64]) and not dropped:
                    dropped.append(True)
                    continue
                reply, rid = answer(frames)
                server.send(identity, encode(reply, rid))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield server.address, seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_a_refused_pull_makes_the_client_send_the_lost_push_then_the_pull_again():
    with shard_that_loses_the_first_push() as (address, seen):
        client = PSClient([NodeInfo("shard", 0, address)], timeout=20, retry_s=5.0,
                          worker_id="w")
        push = client.push_async("ctr", KEYS, np.ones((2, 1), np.float32))
        pull = client.pull_async("ctr", KEYS)
        values = pull.wait()
        push.wait()
        assert values.tolist() == [[1.0], [1.0]]  # the answer includes push 1
        assert seen[:3] == [("pull", 1), ("push", 1), ("pull", 1)]  # refused, then in order
        assert client.retries >= 2
        client.close()


def test_a_refused_push_makes_the_client_send_the_lost_push_then_itself_again():
    with shard_that_loses_the_first_push() as (address, seen):
        client = PSClient([NodeInfo("shard", 0, address)], timeout=20, retry_s=5.0,
                          worker_id="w")
        first = client.push_async("ctr", KEYS, np.ones((2, 1), np.float32))
        second = client.push_async("ctr", KEYS, np.ones((2, 1), np.float32))
        second.wait()
        first.wait()
        assert seen[:3] == [("push", 2), ("push", 1), ("push", 2)]  # refused, then in order
        assert client.pull("ctr", KEYS).tolist() == [[2.0], [2.0]]
        client.close()


def test_a_shard_that_lost_an_acknowledged_push_is_an_error_not_a_resend_loop():
    with shard_that_loses_the_first_push(forget_after=2) as (address, seen):
        client = PSClient([NodeInfo("shard", 0, address)], timeout=20, retry_s=0.2,
                          worker_id="w")
        client.push_async("ctr", KEYS, np.ones((2, 1), np.float32))  # lost, then sent again
        client.push("ctr", KEYS, np.ones((2, 1), np.float32))  # acknowledged, then forgotten
        with pytest.raises(DeltapsError, match="shard 0 no longer has push 2 of worker w"):
            client.pull("ctr", KEYS)
        assert len(seen) < 10  # refused once, not sent again and again
        client.close()


def test_a_new_connection_to_a_shard_resends_what_the_old_one_took_at_once():
    """A push taken by a connection that then dies (a shard restarted on the same address, or
    a link cut until the heartbeats dropped it) is sent again as soon as the new connection
    is up, not when the silence back-off expires: here that back-off is a minute."""
    old = RawRouter()
    address = old.address
    hello = HelloReply(PROTOCOL, "shard", 0, 1, {"ctr": {"bits": 8}})
    ready = threading.Event()

    def answer_hello():
        identity, frames = old.recv()
        server_rid = decode(frames, 1 << 20)[1]
        old.send(identity, encode(hello, server_rid))
        ready.set()

    t = threading.Thread(target=answer_hello, daemon=True)
    t.start()
    client = PSClient([NodeInfo("shard", 0, address)], timeout=120.0, retry_s=60.0)
    t.join(5)
    pending = client.push_async("ctr", KEYS, np.ones((2, 1), np.float32))
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(pending.wait()), daemon=True)
    waiter.start()
    assert old.poll(10), "the push never reached the first connection"
    old.recv()  # taken, never answered: the connection dies with it
    old.close()
    new = None
    for _ in range(100):  # the old socket's port is released asynchronously
        try:
            new = RawRouter(address)
            break
        except Exception:
            threading.Event().wait(0.05)
    assert new is not None, f"could not bind {address} again"
    try:
        assert new.poll(20), "the push was not sent again on the new connection"
        identity, frames = new.recv()
        msg, rid = decode(frames, 1 << 20)
        assert msg.op == "push" and msg.push_no == 1
        new.send(identity, encode(PushAck("ctr", 1), rid))
        waiter.join(20)
        assert waited == [{0: 1}]
    finally:
        client.close()
        new.close()


def test_a_slow_shards_first_answer_is_taken_not_the_answer_to_the_copy_sent_again():
    """A shard slower than `retry_s` gets every outstanding request again, after the push
    that followed the pull: the copy of the pull would hold that push. The original's answer
    comes first and is the one the pull returns."""
    applied = {"w": 0}

    def on_push(msg):
        applied["w"] = max(applied["w"], msg.push_no)
        return PushAck(msg.model, 1)

    handlers = {"hello": lambda msg: HelloReply(PROTOCOL, "shard", 0, 1, {"ctr": {"bits": 8}}),
                "push": on_push,
                "pull": lambda msg: PullReply(msg.model, 1, np.full((msg.keys.size, 1),
                                                                    applied["w"], np.float32))}
    server, stop, ops = RawRouter(), threading.Event(), []

    def pump():
        while not stop.is_set():
            if server.poll(0.02):
                identity, frames = server.recv()
                msg, rid = decode(frames, 1 << 20)
                ops.append(msg.op)
                if ops.count("pull") == 1 and msg.op == "pull":
                    time.sleep(0.8)  # busy: the client sends everything again meanwhile
                server.send(identity, encode(handlers[msg.op](msg), rid))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        client = PSClient([NodeInfo("shard", 0, server.address)], timeout=20, retry_s=0.2,
                          worker_id="w")
        pull = client.pull_async("ctr", KEYS)
        push = client.push_async("ctr", KEYS, np.ones((2, 1), np.float32))
        assert pull.wait().tolist() == [[0.0], [0.0]]  # without the push sent after it
        push.wait()
        assert client.pull("ctr", KEYS).tolist() == [[1.0], [1.0]]  # answered after the copies
        assert client.retries >= 2 and ops[1:5] == ["pull", "push", "pull", "push"], ops
        client.close()
    finally:
        stop.set()
        thread.join(5)
        server.close()
