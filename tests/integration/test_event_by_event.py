"""On a real cluster, a worker learns event by event whatever its batch size: batch 1 and batch
4096 on the same events give the same progressive log loss and the same shard weights, for the
default optimizer and for one whose weight is a state column."""
from __future__ import annotations

import numpy as np
import pytest

from common.config import OptimizerSpec
from tests.integration.helpers import ListSource, planted_events, shard_weights
from worker.ps_client import PSClient
from worker.trainer import Trainer

SPEC = """
[models.one]
bits = 14
crosses = [["user", "item"]]
[models.one.optimizer]
name = "{name}"
learning_rate = {lr}
[models.big]
bits = 14
crosses = [["user", "item"]]
[models.big.optimizer]
name = "{name}"
learning_rate = {lr}
"""


@pytest.mark.parametrize("name, lr", [("ftrl", 0.1), ("lazy_adam", 0.01)])
def test_batch_1_and_batch_4096_learn_the_same_on_a_cluster(local_cluster, name, lr):
    events = planted_events(2500, seed=5)
    c = local_cluster(SPEC.format(name=name, lr=lr), shards=2, replicas=0).start_all()
    client = PSClient(c.cluster.shards())
    try:
        one = Trainer(client, c.spec, "one", batch_size=1).train(ListSource(events))
        big = Trainer(client, c.spec, "big", batch_size=4096).train(ListSource(events))
        assert one.batches == 2500 and big.batches == 1
        assert abs(one.logloss - big.logloss) < 1e-4
        p = np.mean([e["label"] for e in events])
        assert one.logloss < -(p * np.log(p) + (1 - p) * np.log(1 - p)) - 0.03  # it learned
        opt = OptimizerSpec(name, learning_rate=lr)
        w_one, w_big = (shard_weights(client, m, 14, opt) for m in ("one", "big"))
        assert np.count_nonzero(w_one) > 100
        np.testing.assert_allclose(w_one, w_big, rtol=1e-3, atol=1e-5)
    finally:
        client.close()
