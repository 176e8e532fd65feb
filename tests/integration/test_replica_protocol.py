"""A real replica node against a scripted shard: every step of the Clone protocol checked.

The test process plays the shard with the project's own transport classes, so it decides
exactly which updates arrive, in which order, and when a snapshot request is answered.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from common.messages import ChecksumRequest, Heartbeat, HelloReply, PROTOCOL, SnapshotReply, Update
from common.errors import NotReady, RemoteError
from common.transport import Publisher, RequestServer
from deploy.admin import node_status
from serving.client import ServingClient

SPEC = "[models.ctr]\nbits = 6\nbias = false\n"
SLOTS = 1 << 6


class ScriptedShard:
    """Answers snapshot requests only when told, with whatever state the test sets."""

    def __init__(self):
        self.weights = np.zeros(SLOTS, np.float32)
        self.epoch, self.seq = 1, 0
        self.requests = 0
        self.server = RequestServer("tcp://127.0.0.1:0", {
            "snapshot": self.on_snapshot,
            "hello": lambda msg: HelloReply(PROTOCOL, "shard", 0, 1, {}),
        }, 1 << 24)
        self.publisher = Publisher("tcp://127.0.0.1:0")

    def on_snapshot(self, msg):
        self.requests += 1
        return SnapshotReply(msg.model, 0, 1, self.epoch, self.seq, self.weights.copy())

    def answer(self, timeout=5.0):
        """Answer the snapshot request(s) waiting (waits for at least one)."""
        before = self.requests
        deadline = time.monotonic() + timeout
        while self.requests == before:
            assert time.monotonic() < deadline, "replica never asked for a snapshot"
            if self.server.poll(0.05):
                self.server.handle_ready()

    def publish(self, keys, values, epoch=None, seq=None):
        epoch = self.epoch if epoch is None else epoch
        seq = self.seq + 1 if seq is None else seq
        self.publisher.publish(Update("ctr", 0, epoch, seq, np.array(keys, np.uint64),
                                        np.array(values, np.float32)))

    def heartbeat(self, epoch=None, seq=None):
        self.publisher.publish(Heartbeat(0, self.epoch if epoch is None else epoch,
                                           {"ctr": self.seq if seq is None else seq}))

    def close(self):
        self.server.close()
        self.publisher.close()


@pytest.fixture
def setup(inprocess_cluster):
    shard = ScriptedShard()
    c = inprocess_cluster(SPEC, shards=1, replicas=1)
    node = c.cluster.shards()[0]
    node.address, node.pub_address = shard.server.address, shard.publisher.address
    c.cluster.save(c.path)
    c.start("replica", 0)
    yield shard, c
    c.stop_all()
    shard.close()


def model_state(c):
    return node_status(c.address("replica", 0), timeout=2.0)["models"]["ctr"]


def wait_for(c, predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        st = model_state(c) if node_status(c.address("replica", 0), 0.5) else None
        if st and predicate(st):
            return st
        assert time.monotonic() < deadline, f"replica never reached: {what}; last {st}"
        time.sleep(0.02)


def predict(c, instances):
    with ServingClient([c.address("replica", 0)], timeout=2.0) as client:
        return client.predict("ctr", instances)


def test_bootstrap_gap_tail_and_epoch_change(setup):
    shard, c = setup
    shard.weights[:] = 0.0
    shard.answer()  # bootstrap snapshot at seq 0
    wait_for(c, lambda st: st["ready"], "ready after the first snapshot")

    shard.publish([5], [1.5])
    shard.seq = 1
    st = wait_for(c, lambda st: st["version"] == [1], "update 1 applied")
    assert st["ready"]

    # seq 3 arrives without 2: the replica stops answering until it has a fresh snapshot
    shard.publish([9], [2.0], seq=3)
    wait_for(c, lambda st: not st["ready"] and st["gaps"] == 1, "gap noticed")
    with pytest.raises(RemoteError, match="not ready") as refused:
        predict(c, [{}])
    assert isinstance(refused.value, NotReady)
    shard.weights[5], shard.weights[7], shard.weights[9] = 1.5, -1.0, 2.0
    shard.seq = 3
    shard.answer()
    st = wait_for(c, lambda st: st["ready"], "ready after repairing the gap")
    assert st["version"] == [3]

    # a heartbeat announcing seq 4 that never arrived: the missed tail is noticed
    shard.heartbeat(seq=4)
    wait_for(c, lambda st: not st["ready"] and st["gaps"] == 2, "missed tail noticed")
    shard.weights[11], shard.seq = 0.5, 4
    shard.answer()
    wait_for(c, lambda st: st["ready"] and st["version"] == [4], "tail repaired")

    # the shard restarted (new epoch): sequence numbers start again, a snapshot is needed
    shard.epoch, shard.seq = 2, 0
    shard.publish([13], [3.0], epoch=2, seq=1)
    wait_for(c, lambda st: not st["ready"] and st["gaps"] == 3, "epoch change noticed")
    shard.weights[13], shard.seq = 3.0, 1
    shard.answer()
    wait_for(c, lambda st: st["ready"] and st["version"] == [1], "new epoch adopted")

    from common.checksum import weights_checksum
    from common.transport import Channel
    ch = Channel(c.address("replica", 0))
    sums = ch.request(ChecksumRequest(), 5).sums["ctr"]["0"]
    ch.close()
    assert sums == [2, 1, weights_checksum(shard.weights)]


def test_duplicate_and_old_updates_change_nothing(setup):
    shard, c = setup
    shard.answer()
    wait_for(c, lambda st: st["ready"], "ready")
    shard.publish([5], [1.0], seq=1)
    wait_for(c, lambda st: st["version"] == [1], "update 1")
    shard.publish([5], [9.0], seq=1)  # a duplicate carrying another value must be ignored
    shard.publish([6], [1.0], seq=2)
    wait_for(c, lambda st: st["version"] == [2], "update 2")
    from common.transport import Channel
    from common.checksum import weights_checksum
    expected = np.zeros(SLOTS, np.float32)
    expected[5], expected[6] = 1.0, 1.0
    ch = Channel(c.address("replica", 0))
    assert ch.request(ChecksumRequest(), 5).sums["ctr"]["0"][2] == weights_checksum(expected)
    ch.close()
