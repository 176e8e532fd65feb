"""The deep model through real shards learns what the same model in Keras learns.

The oracle for the cluster's training math: the same events in the same order, the same
initial values and the same optimizer (`bench.deep_keras`: Keras layers, lazy Adam) give the
same weights after a few batches, within float32 rounding (the cluster runs Adam in float64 and
adds float32 deltas; Keras runs it in float32). Over a long run the two drift apart the way
any two roundings of Adam do, so the benchmark compares their log loss, not their weights.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from common.features import Featurizer
from common.sharding import slots_of
from worker.ps_client import PSClient
from worker.sources.nonlinear import FIELDS, NonlinearStream
from worker.trainer import Trainer

pytest.importorskip("tensorflow")

BATCH = 256
SPEC = "".join(f'[transforms.{f}]\nkind = "categorical"\n' for f in FIELDS) + f"""
[models.deep]
kind = "deep"
bits = 12
hidden = [16, 8]
transforms = [{", ".join(f'"{f}"' for f in FIELDS)}]
"""


class Batches:
    """The same batches for both learners."""

    def __init__(self, batches):
        self.batches = list(batches)

    def read(self, _max_events):
        return self.batches.pop(0) if self.batches else None


def keras_weights(cluster_spec, batches) -> tuple[np.ndarray, np.ndarray, float]:
    """(sparse rows, flat dense parameters, mean loss) of the Keras model after `batches`."""
    from bench.deep_keras import build_model
    spec = cluster_spec.model("deep")
    featurizer = Featurizer(cluster_spec.feature_spec("deep"))
    model, loss = None, 0.0
    for batch in batches:
        _offsets, ids = featurizer.featurize(batch).to_csr()
        slots = slots_of(ids, spec.bits).view(np.int64).reshape(batch.n, -1)
        model = model or build_model(spec, slots.shape[1])
        loss += float(model.train_on_batch(slots, batch.labels.astype(np.float32)[:, None]))
    weights = model.get_weights()
    return weights[0], np.concatenate([w.ravel() for w in weights[1:]]), loss / len(batches)


def test_a_few_batches_through_the_cluster_give_the_keras_models_weights(inprocess_cluster):
    """One worker, two shards, the pipelined loop (pulls patched with the worker's own pushes).
    The worker's first batch outlasts `retry_s` (as tracing and compiling may): the replies
    that arrived meanwhile are not a silent shard, and no pull goes out again (one sent again
    after the push it is patched with would hold that push twice)."""
    stream = NonlinearStream(6 * BATCH, seed=3)
    batches = [stream.read(BATCH) for _ in range(6)]
    c = inprocess_cluster(SPEC, shards=2, replicas=0).start_all()
    client = PSClient(c.cluster.shards(), retry_s=0.5)
    try:
        trainer = Trainer(client, c.spec, "deep", BATCH)
        learn = trainer.learner.learn

        def slow_first(*args):
            if not client.push_no:
                time.sleep(1.5)  # the shards answer the pulls already out meanwhile
            return learn(*args)
        trainer.learner.learn = slow_first
        summary = trainer.train(Batches(batches))
        layout = trainer.learner.layout
        state = client.pull("deep", np.arange(layout.total_keys, dtype=np.uint64))
        assert client.retries == 0
    finally:
        client.close()
    rows, dense, loss = keras_weights(c.spec, batches)
    h = layout.width
    assert np.abs(rows).max() > 0.05 and summary.events == 6 * BATCH  # it learned
    np.testing.assert_allclose(state[:layout.slots, :h], rows, atol=2e-5)
    np.testing.assert_allclose(layout.dense_of_rows(state[layout.slots:, :h]), dense, atol=2e-5)
    assert summary.logloss == pytest.approx(loss, abs=1e-5)
