"""The whole path with real processes: worker -> 2 shards -> replicas -> client."""
from __future__ import annotations

import numpy as np
import pytest

from common.messages import Pull
from common.errors import RemoteError
from common.sharding import split_by_shard
from common.transport import Channel
from deploy.admin import node_status
from serving.client import ServingClient
from tests.integration.helpers import (SMALL_SPEC, ListSource, planted_events, score_locally,
                                       shard_weights, wait_replica_caught_up)
from worker.ps_client import PSClient
from worker.trainer import Trainer


def test_trained_weights_reach_every_replica_exactly(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=2, replicas=2).start_all()
    client = PSClient(c.cluster.shards())
    trainer = Trainer(client, c.spec, "ctr", batch_size=64)
    summary = trainer.train(ListSource(planted_events(6000)))
    assert summary.events == 6000
    assert summary.logloss < 0.66  # learned something: a constant predictor scores ~0.69
    assert summary.auc > 0.7

    weights = shard_weights(client, "ctr", 16)
    assert np.count_nonzero(weights) > 100
    instances = [e["features"] for e in planted_events(200, seed=1)]
    expected = score_locally(c.spec, "ctr", weights, instances)
    for r in range(2):
        version = wait_replica_caught_up(c.address("replica", r), "ctr", trainer.last_seqs)
        with ServingClient([c.address("replica", r)]) as serving:
            got = serving.predict("ctr", instances)
        assert got.version == version
        np.testing.assert_array_equal(got.probabilities, expected)
    client.close()


def test_replica_started_after_training_bootstraps_from_snapshots(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=2, replicas=1)
    c.start("shard", 0), c.start("shard", 1)
    c.wait_ready()
    client = PSClient(c.cluster.shards())
    trainer = Trainer(client, c.spec, "ctr", batch_size=128)
    trainer.train(ListSource(planted_events(3000)))
    c.start("replica", 0)
    c.wait_ready(role="replica")
    wait_replica_caught_up(c.address("replica", 0), "ctr", trainer.last_seqs)
    instances = [e["features"] for e in planted_events(50, seed=2)]
    expected = score_locally(c.spec, "ctr", shard_weights(client, "ctr", 16), instances)
    with ServingClient([c.address("replica", 0)]) as serving:
        np.testing.assert_array_equal(serving.predict("ctr", instances).probabilities, expected)
    client.close()


class CountingPSClient(PSClient):
    """A PSClient that notes the push numbers it sent to each shard."""

    def __init__(self, shards):
        super().__init__(shards)
        self.sent: list[list[int]] = [[] for _ in shards]

    def push_async(self, model, keys, deltas, *args):
        pending = super().push_async(model, keys, deltas, *args)
        for k, idx in enumerate(split_by_shard(keys, self.n_shards)):
            if idx.size:
                self.sent[k].append(self.push_no)
        return pending


def test_two_workers_train_one_model_concurrently(local_cluster):
    import threading
    c = local_cluster(SMALL_SPEC, shards=2, replicas=1).start_all()
    results, clients = {}, {}

    def run(k):
        clients[k] = client = CountingPSClient(c.cluster.shards())
        results[k] = Trainer(client, c.spec, "ctr", 32).train(ListSource(planted_events(2000, k)))
        client.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert sorted(results) == [0, 1]
    assert all(r.events == 2000 for r in results.values())
    assert clients[0].worker_id != clients[1].worker_id
    for shard in range(2):
        address = c.address("shard", shard)
        sent = {k: client.sent[shard] for k, client in clients.items()}
        assert all(sent.values()), f"a worker sent shard {shard} no push: {sent}"
        status = node_status(address)
        # every push of both workers applied once: the shard counts pushes, not workers
        applied = status["models"]["ctr"]["pushes"]
        assert applied == sum(map(len, sent.values())), (
            f"shard {shard} applied {applied} pushes; the workers sent it "
            f"{[len(v) for v in sent.values()]}")
        assert status["duplicates"] == 0
        slots = np.arange(64, dtype=np.uint64)
        owned = slots[split_by_shard(slots, 2)[shard][:1]]
        ch = Channel(address)
        try:
            for k, client in clients.items():  # refused unless the worker's last push is applied
                ch.request(Pull("ctr", owned, client.worker_id, sent[k][-1]), 5)
        finally:
            ch.close()


def test_every_node_exits_cleanly_on_sigterm(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=2, replicas=1).start_all()
    codes = c.stop_all()
    assert codes == {("replica", 0): 0, ("shard", 0): 0, ("shard", 1): 0}


def test_predict_handles_missing_features_and_refuses_wrong_types(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=2, replicas=1).start_all()
    with ServingClient([c.address("replica", 0)]) as serving:
        got = serving.predict("ctr", [{}, {"user": "u1"}, {"user": "u1", "unknown": "x"}])
        assert got.probabilities.shape == (3,)
        assert np.all(got.probabilities == 0.5)  # untrained model
        with pytest.raises(RemoteError, match="feature 'user' has unsupported type dict"):
            serving.predict("ctr", [{"user": {"nested": 1}}])
        with pytest.raises(RemoteError, match="unknown model 'nope'"):
            serving.predict("nope", [{}])


def test_pipelined_training_gives_bit_identical_weights(local_cluster):
    events = planted_events(5000, seed=9)
    p = np.mean([e["label"] for e in events])
    constant = -(p * np.log(p) + (1 - p) * np.log(1 - p))  # logloss of always predicting p
    results = []
    for pipeline in (False, True):
        c = local_cluster(SMALL_SPEC, shards=2, replicas=0).start_all()
        client = PSClient(c.cluster.shards())
        trainer = Trainer(client, c.spec, "ctr", 50, pipeline=pipeline)
        summary = trainer.train(ListSource(events))
        results.append((shard_weights(client, "ctr", 16), summary.logloss))
        client.close()
        c.stop_all()
    for pipeline, (_, logloss) in zip((False, True), results):
        assert logloss < constant - 0.03, (f"pipeline={pipeline} learned nothing: logloss "
                                          f"{logloss:.4f}, the constant predictor's {constant:.4f}")
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_bounded_delay_learns_each_batch_without_just_the_push_before_it(local_cluster):
    """max_delay=1 is exactly the schedule pull 0, pull 1, push 0, pull 2, push 1, ...: batch
    i is learned from weights with every push but i-1 applied, and differs from the exact loop."""
    events = planted_events(3000, seed=4)

    def trained(run) -> tuple[np.ndarray, float]:
        c = local_cluster(SMALL_SPEC, shards=2, replicas=0).start_all()
        client = PSClient(c.cluster.shards())
        try:
            logloss = run(client, c.spec)
            return shard_weights(client, "ctr", 16), logloss
        finally:
            client.close()
            c.stop_all()

    def delayed(client, spec):
        return Trainer(client, spec, "ctr", 50, max_delay=1).train(ListSource(events)).logloss

    def by_hand(client, spec):
        trainer = Trainer(client, spec, "ctr", 50, pipeline=False)
        source = ListSource(events)
        batches = list(iter(lambda: source.read(50), None))
        ahead = [trainer.prepare(batches[0]), trainer.prepare(batches[1])]
        for i in range(len(batches)):
            push = trainer.learn(ahead[i])
            if i + 2 < len(batches):
                ahead.append(trainer.prepare(batches[i + 2]))
            push.wait()
        return trainer.metrics.logloss

    def exact(client, spec):
        return Trainer(client, spec, "ctr", 50).train(ListSource(events)).logloss

    weights, logloss = trained(delayed)
    hand_weights, hand_logloss = trained(by_hand)
    exact_weights, exact_logloss = trained(exact)
    np.testing.assert_array_equal(weights, hand_weights)
    assert logloss == hand_logloss
    assert not np.array_equal(weights, exact_weights)
    assert abs(logloss - exact_logloss) < 0.02


def test_bounded_delay_is_refused_without_the_pipeline_and_below_zero(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    client = PSClient(c.cluster.shards())
    try:
        with pytest.raises(ValueError, match="needs the pipelined loop"):
            Trainer(client, c.spec, "ctr", 50, pipeline=False, max_delay=1)
        with pytest.raises(ValueError, match="max_delay must be >= 0"):
            Trainer(client, c.spec, "ctr", 50, max_delay=-1)
    finally:
        client.close()
