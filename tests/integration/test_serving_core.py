"""The replica's core loop, driven in-process: a huge update batch is written in chunks with
reads answered in between (a read never declares a version whose batch is not fully written),
and predicts waiting together are scored in one pass."""
from __future__ import annotations

import time

import numpy as np
import pytest

from common.messages import ChecksumRequest, ErrorReply, Predict, PredictIds, Update
from common.checksum import weights_checksum
from common.config import NodeInfo, load_spec
from common.features import columnarize
from common.linear import sigmoid
from common.transport import Channel
from serving.replica import APPLY_CHUNK, PendingWrite, ReplicaNode
from tests.rawpeer import next_reply

BITS = 18
N_KEYS = 200_000  # > 3 chunks of APPLY_CHUNK


@pytest.fixture
def node():
    spec = load_spec(text=f"[models.m]\nbits = {BITS}\nbias = false\n")
    spec.shards = 1
    shard = NodeInfo("shard", 0, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")  # never answers
    node = ReplicaNode(spec, 0, "tcp://127.0.0.1:0", [shard])
    node.models["m"].load_snapshot(0, 1, 1, 0, np.zeros(1 << BITS, np.float32))
    client = Channel(node.server.address)
    yield node, client
    client.close()
    node.close()


def queue(node, seq, value):
    model = node.models["m"]
    update = Update("m", 0, 1, seq, np.arange(N_KEYS, dtype=np.uint64),
                      np.full(N_KEYS, value, np.float32))
    node.pending.extend(PendingWrite(model, u) for u in model.accept_update(update))


def wait_waiting(node):
    deadline = time.monotonic() + 5
    while not node.server.waiting():
        assert time.monotonic() < deadline, "request never arrived"
        time.sleep(0.001)


def test_reads_between_chunks_declare_the_last_fully_written_version(node):
    node, client = node
    assert N_KEYS > 3 * APPLY_CHUNK
    queue(node, 1, 1.0)
    # slot 0 is in the first chunk, slot N_KEYS-1 in the last one
    rid = client.send(PredictIds("m", np.array([0, 1, 2], np.int64),
                                   np.array([0, N_KEYS - 1], np.uint32)))
    wait_waiting(node)
    node.apply_pending()
    reply = client.recv(rid, 5.0)
    assert node.interleaved_reads == 1  # answered after the first chunk, not after the batch
    assert reply.version == [0]  # the batch was not fully written: its seq is not declared
    np.testing.assert_array_equal(reply.probabilities,
                                  np.array([sigmoid(np.float32(1.0)), 0.5], np.float32))
    model = node.models["m"]
    assert model.version == [1] and np.all(model.weights[:N_KEYS] == 1.0)


def test_reads_are_answered_between_update_messages(node):
    node, client = node
    updates = [Update("m", 0, 1, seq, np.array([0], np.uint64), np.array([v], np.float32))
               for seq, v in ((1, 1.0), (2, 2.0))]
    node.subscriber.drain = lambda: updates  # two small updates arrived together
    rid = client.send(PredictIds("m", np.array([0, 1], np.int64), np.array([0], np.uint32)))
    wait_waiting(node)
    node.on_updates()
    reply = client.recv(rid, 5.0)
    assert node.interleaved_reads == 1
    assert reply.version == [1]  # answered after the first update, before the second
    np.testing.assert_array_equal(reply.probabilities, [sigmoid(np.float32(1.0))])
    assert node.models["m"].version == [2]


def test_checksums_between_chunks_finish_the_queue_first(node):
    node, client = node
    queue(node, 1, 2.0)
    queue(node, 2, 3.0)  # a newer batch over the same slots, queued behind
    rid = client.send(ChecksumRequest())
    wait_waiting(node)
    node.apply_pending()
    sums = client.recv(rid, 5.0).sums["m"]["0"]
    model = node.models["m"]
    expected = np.zeros(1 << BITS, np.float32)
    expected[:N_KEYS] = 3.0
    # the checksum covers whole batches only, and the interrupted batch never overwrote the
    # newer one after the handler finished the queue
    assert sums == [1, 2, weights_checksum(expected)]
    np.testing.assert_array_equal(model.weights, expected)
    assert model.version == [2] and not node.pending


def test_without_waiting_reads_a_batch_is_written_in_one_go(node):
    node, _client = node
    queue(node, 1, 4.0)
    node.apply_pending()
    assert node.interleaved_reads == 0 and node.models["m"].version == [1]


def test_waiting_predicts_are_scored_together_and_a_bad_one_alone_is_refused(node):
    node, _client = node
    model = node.models["m"]
    model.apply_update(Update("m", 0, 1, 1, np.arange(1 << BITS, dtype=np.uint64),
                                np.linspace(-2, 2, 1 << BITS).astype(np.float32)))
    requests = [[{"a": "x", "b": "y"}, {"a": "z"}], [{"a": "w", "b": "v"}],
                [{"a": {"bad": 1}}], [{"b": "q"}, {}]]
    clients = [Channel(node.server.address) for _ in requests]
    try:
        for ch, inst in zip(clients, requests):
            ch.send(Predict("m", inst))
        time.sleep(0.2)  # every request waiting on the socket
        node.server.handle_ready()
        replies = [next_reply(ch, 5.0) for ch in clients]
    finally:
        for ch in clients:
            ch.close()
    assert node.coalesced == 4 and node.server.requests == 4
    bad = replies[2]
    assert isinstance(bad, ErrorReply) and bad.code == "invalid_instance"
    assert "instance 0: feature 'a' has unsupported type dict" in bad.message
    for i in (0, 1, 3):
        alone = model.score(columnarize(requests[i], with_labels=False))
        assert replies[i].version == [1]
        np.testing.assert_array_equal(replies[i].probabilities, alone)
    assert node.predict_errors == 1 and node.served == 3
    assert len(set(np.concatenate([replies[i].probabilities for i in (0, 1, 3)]).tolist())) > 3


def test_predicts_of_good_requests_waiting_together_share_one_pass(node):
    node, _client = node
    model = node.models["m"]
    calls = []
    score = model.score_events
    model.score_events = lambda instances: calls.append(len(instances)) or score(instances)
    clients = [Channel(node.server.address) for _ in range(3)]
    try:
        for k, ch in enumerate(clients):
            ch.send(Predict("m", [{"a": f"v{k}"}] * (k + 1)))
        time.sleep(0.2)  # all three waiting
        node.server.handle_ready()
        replies = [next_reply(ch, 5.0) for ch in clients]
    finally:
        for ch in clients:
            ch.close()
    assert calls == [6]  # one featurize + score for the 1 + 2 + 3 instances
    assert [r.probabilities.shape for r in replies] == [(1,), (2,), (3,)]
