"""What the stream tests share: two models trained alike (a reference run and a disturbed
one), a client that dies between the sends of one push, and the checks of what the shards
learned."""
from __future__ import annotations

import numpy as np

from common.messages import Push
from common.sharding import split_by_shard
from deploy.admin import node_status
from tests.integration.helpers import shard_weights
from worker.ps_client import PSClient
from worker.trainer import Trainer

TWO_MODELS = """
[models.ref]
bits = 14
crosses = [["user", "item"]]
[models.run]
bits = 14
crosses = [["user", "item"]]
"""


class Killed(Exception):
    pass


class DiesMidPush(PSClient):
    """A client whose push `die_at` reaches shard 0 only, after which the worker "dies": what
    a SIGKILL between the sends of one push leaves behind."""

    die_at = 0

    def push_async(self, model, keys, deltas, events=0, push_no=None):
        if push_no == self.die_at:
            idx = split_by_shard(keys, self.n_shards)[0]
            deltas = np.asarray(deltas, np.float32)
            self.wait([self._send(0, Push(model, keys[idx], deltas[idx], self.worker_id,
                                          push_no, self._last_push[0], events))])
            raise Killed
        return super().push_async(model, keys, deltas, events, push_no)


def events_learned(c, model: str) -> int:
    return sum(node_status(c.address("shard", k))["models"][model]["events"]
               for k in range(c.spec.shards))


def train_source(c, source, model: str, client_cls=PSClient, batch: int = 500) -> Trainer:
    """Train `model` on `source` to its end as the source's own worker; the source is closed."""
    client = client_cls(c.cluster.shards(), retry_s=0.3,
                        worker_id=getattr(source, "worker_id", None))
    try:
        trainer = Trainer(client, c.spec, model, batch)
        trainer.train(source)
        return trainer
    finally:
        client.close()
        source.close()


def weights(c, model: str) -> np.ndarray:
    client = PSClient(c.cluster.shards())
    try:
        return shard_weights(client, model, 14)
    finally:
        client.close()
