"""The deep sparse model through real nodes: a worker trains it in TensorFlow against 2 shard
processes, a replica process serves it, and every read path answers what the worker's own
TensorFlow forward pass gives for the shards' rows."""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from common.errors import RemoteError
from common.features import columnarize
from common.messages import Push
from common.transport import Channel
from deploy.admin import verify
from serving.client import ServingClient
from tests.integration.helpers import ListSource, planted_events, wait_replica_caught_up
from worker.ps_client import PSClient
from worker.trainer import Trainer

pytest.importorskip("tensorflow")

DEEP_SPEC = """
[models.deep]
kind = "deep"
bits = 12
hidden = [16, 8]
crosses = [["user", "item"]]
[models.deep.optimizer]
learning_rate = 0.01

[models.lin]
bits = 12
crosses = [["user", "item"]]
"""


def worker_forward(trainer: Trainer, client: PSClient, instances: list[dict]) -> np.ndarray:
    """The worker's TF forward pass over the shards' current rows (no learning)."""
    features = trainer.featurizer.featurize(columnarize(instances, with_labels=False))
    keys = trainer.learner.batch_keys(trainer.indexer.index(features.ids))
    return trainer.learner.predict(features, keys, client.pull("deep", keys.slots))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from deploy.local import LocalCluster
    c = LocalCluster(tmp_path_factory.mktemp("deep") / "c", DEEP_SPEC, 2, 1).start_all()
    client = PSClient(c.cluster.shards())
    try:
        trainer = Trainer(client, c.spec, "deep", batch_size=128)
        summary = trainer.train(ListSource(planted_events(6000)))
        wait_replica_caught_up(c.address("replica", 0), "deep", trainer.last_seqs)
        yield c, client, trainer, summary
    finally:
        client.close()
        c.stop_all()


def test_deep_model_learns_and_every_read_path_matches_the_worker(trained):
    c, client, trainer, summary = trained
    assert summary.events == 6000 and summary.logloss < 0.62 and summary.auc > 0.75
    instances = [e["features"] for e in planted_events(300, seed=5)] + [{}]
    want = worker_forward(trainer, client, instances)
    assert np.ptp(want) > 0.3  # a trained model, varied answers
    with ServingClient([c.address("replica", 0)]) as serving:
        got = serving.predict("deep", instances)
        features = trainer.featurizer.featurize(columnarize(instances, with_labels=False))
        prehashed = serving.predict_ids("deep", features)
    np.testing.assert_allclose(got.probabilities, want, atol=1e-5)
    np.testing.assert_array_equal(prehashed.probabilities, got.probabilities)
    req = urllib.request.Request(f"{c.cluster.replicas()[0].http_address}/v1/models/deep:predict",
                                 data=json.dumps({"instances": instances}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.loads(resp.read())
    np.testing.assert_allclose(np.array(body["predictions"], np.float32), want, atol=1e-5)
    rows = verify(c.cluster)
    assert rows and all(r["ok"] for r in rows), rows  # the replica holds the shards' rows exactly


def test_dense_parameters_reach_the_replica_as_updates(trained):
    """A push that moves only dense rows changes the replica's answers (no snapshot needed)."""
    c, client, trainer, _ = trained
    layout = trainer.learner.layout
    keys = layout.dense_keys()
    deltas = np.zeros((keys.size, layout.row_width), np.float32)
    deltas[-1, (layout.dense_size - 1) % layout.width] = 0.5  # b_out
    instances = [e["features"] for e in planted_events(20, seed=6)]
    with ServingClient([c.address("replica", 0)]) as serving:
        before = serving.predict("deep", instances).probabilities
        seqs = client.push("deep", keys, deltas)
        wait_replica_caught_up(c.address("replica", 0), "deep", seqs)
        after = serving.predict("deep", instances).probabilities
    logit = np.log(before / (1 - before))
    np.testing.assert_allclose(after, 1 / (1 + np.exp(-(logit + 0.5))), atol=1e-5)


def test_bad_dense_deltas_are_refused_whole(trained):
    c, client, trainer, _ = trained
    layout = trainer.learner.layout
    keys = layout.dense_keys()[layout.dense_keys() % np.uint64(2) == 0]
    before = client.pull("deep", keys)
    bad = np.zeros((keys.size, layout.row_width), np.float32)
    bad[0, 0] = np.nan
    ch = Channel(c.address("shard", 0))
    try:
        with pytest.raises(RemoteError, match="not finite|NaN"):
            ch.request(Push("deep", keys, bad), 5.0)
        with pytest.raises(RemoteError, match="needs"):
            ch.request(Push("deep", keys, np.zeros((keys.size, 3), np.float32)), 5.0)
    finally:
        ch.close()
    np.testing.assert_array_equal(client.pull("deep", keys), before)


@pytest.mark.parametrize("model", ["deep", "lin"])
def test_exported_saved_model_answers_what_the_replica_does(trained, tmp_path, model):
    import tensorflow as tf
    from click.testing import CliRunner

    from deploy.cli import cli
    c, _client, trainer, _ = trained
    if model == "lin":  # give the linear model something to export
        lin = Trainer(_client, c.spec, "lin", batch_size=128)
        lin.train(ListSource(planted_events(2000)))
        wait_replica_caught_up(c.address("replica", 0), "lin", lin.last_seqs)
    result = CliRunner().invoke(cli, ["export", "--cluster", str(c.path), "--model",
                                      model, "--out", str(tmp_path / "saved")])
    assert result.exit_code == 0, result.output
    instances = [e["features"] for e in planted_events(100, seed=7)] + [{}]
    features = trainer.featurizer.featurize(columnarize(instances, with_labels=False))
    offsets, ids = features.to_csr()
    with ServingClient([c.address("replica", 0)]) as serving:
        want = serving.predict(model, instances).probabilities
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    got = loaded.signatures["serving_default"](ids=tf.constant(ids.view(np.int64)),
                                               row_splits=tf.constant(offsets))
    assert np.ptp(want) > 0.1
    np.testing.assert_allclose(got["probabilities"].numpy(), want, atol=1e-5)


@pytest.mark.parametrize("max_delay", [0, 2])
def test_overlapped_pulls_learn_exactly_what_the_unpipelined_loop_does(inprocess_cluster,
                                                                       max_delay):
    """A deep model's next pull goes out before the push and is patched with the worker's own
    pushes it missed: the shards end bit for bit where one batch at a time takes them."""
    events = planted_events(2000, seed=8)
    states, losses = [], []
    for pipeline in (False, True):
        c = inprocess_cluster(DEEP_SPEC, shards=2, replicas=0).start_all()
        client = PSClient(c.cluster.shards())
        try:
            trainer = Trainer(client, c.spec, "deep", 64, pipeline=pipeline,
                              max_delay=max_delay if pipeline else 0)
            assert trainer.max_delay == (max(max_delay, 1) if pipeline else 0)
            losses.append(trainer.train(ListSource(events)).logloss)
            keys = np.arange(trainer.learner.layout.total_keys, dtype=np.uint64)
            states.append(client.pull("deep", keys))
        finally:
            client.close()
    np.testing.assert_array_equal(states[0], states[1])
    assert losses[0] == losses[1]


def test_a_prehashed_read_of_the_wrong_id_width_is_refused(trained):
    """Pre-hashed ids travel as uint32 (a slot needs at most 32 bits); a read sending 64-bit
    ids gets an error naming the dtype, and the replica answers the next read as before."""
    import msgpack

    from common import wire
    from common.messages import ErrorReply, PredictIds
    from tests.rawpeer import raw_exchange
    c, _client, trainer, _ = trained
    features = trainer.featurizer.featurize(columnarize([{"user": "u1"}], with_labels=False))
    offsets, ids = features.to_csr()
    frames = wire.encode(PredictIds("deep", offsets, ids.astype(np.uint32)))
    header = msgpack.unpackb(frames[0])  # small arrays travel inline in the header
    header["arrays"][1][0] = "<u8"
    header["data"][1] = ids.astype(np.uint64).tobytes()
    reply = raw_exchange(c.address("replica", 0), [msgpack.packb(header)])
    assert isinstance(reply, ErrorReply) and "must be <u4, got <u8" in reply.message, reply
    with ServingClient([c.address("replica", 0)]) as serving:
        assert serving.predict_ids("deep", features).probabilities.shape == (1,)


def test_two_workers_train_one_deep_model_and_the_replica_serves_it(inprocess_cluster):
    """Two workers at once (Hogwild across workers, each patching only its own pushes): both
    learn, the shards add both workers' every push (each batch is one Adam step on every dense
    row, so their step count is the two workers' batches together), and the replica answers
    what a worker's forward pass gives for the merged rows."""
    import threading
    c = inprocess_cluster(DEEP_SPEC, shards=2, replicas=1).start_all()
    clients = [PSClient(c.cluster.shards()) for _ in range(2)]
    try:
        trainers = [Trainer(client, c.spec, "deep", batch_size=128) for client in clients]
        summaries: list = [None, None]

        def run(i):
            summaries[i] = trainers[i].train(ListSource(planted_events(3000, seed=20 + i)))
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(45)
        assert all(s is not None and s.events == 3000 and s.auc > 0.7 for s in summaries), \
            summaries
        layout = trainers[0].learner.layout
        dense = clients[0].pull("deep", layout.dense_keys())
        np.testing.assert_array_equal(dense[:, -1], summaries[0].batches + summaries[1].batches)
        seqs = {k: max(t.last_seqs.get(k, 0) for t in trainers) for k in range(2)}
        wait_replica_caught_up(c.address("replica", 0), "deep", seqs)
        instances = [e["features"] for e in planted_events(200, seed=9)]
        want = worker_forward(trainers[1], clients[1], instances)
        with ServingClient([c.address("replica", 0)]) as serving:
            got = serving.predict("deep", instances)
        assert np.ptp(want) > 0.3
        np.testing.assert_allclose(got.probabilities, want, atol=1e-5)
        assert all(r["ok"] for r in verify(c.cluster))
    finally:
        for client in clients:
            client.close()
