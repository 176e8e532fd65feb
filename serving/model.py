"""A whole model in a replica's memory: weights, per-shard sync state, vectorized scoring."""
from __future__ import annotations

import time

import numpy as np

from common.checksum import weights_checksum
from common.config import ModelSpec
from common.errors import InvalidValue, NotReady
from common.features import Batch, FeatureSpec, Featurizer
from common.linear import margins, sigmoid
from common.messages import Update
from common.sharding import slots_of
from serving.sync import ShardSync


class ServingModel:
    """Weights are one float32 array of 2**bits slots; each slot is one float, so an update
    writing slots in place can never leave a torn row for a concurrent read."""

    def __init__(self, spec: ModelSpec, features: FeatureSpec, n_shards: int):
        self.spec = spec
        self.n_shards = n_shards
        self.weights = np.zeros(spec.slots, dtype=np.float32)
        self.featurizer = Featurizer(features)
        self.shards = [ShardSync(k) for k in range(n_shards)]
        self.updates_applied = 0

    @property
    def ready(self) -> bool:
        return all(s.in_sync for s in self.shards)

    @property
    def version(self) -> list[int]:
        return [s.seq for s in self.shards]

    def staleness_ms(self) -> float:
        oldest = min(s.confirmed_at for s in self.shards)
        return round((time.monotonic() - oldest) * 1000.0, 3)

    def apply_snapshot(self, shard: int, n_shards: int, epoch: int, seq: int,
                       values: np.ndarray) -> None:
        if n_shards != self.n_shards:
            raise InvalidValue(f"snapshot from a {n_shards}-shard cluster, expected {self.n_shards}")
        expected = self.weights[shard::n_shards].size
        if values.size != expected:
            raise InvalidValue(f"snapshot of shard {shard} has {values.size} values, "
                               f"expected {expected}")
        self.weights[shard::n_shards] = values
        for update in self.shards[shard].on_snapshot(epoch, seq):
            self._write(update)

    def apply_update(self, update: Update) -> None:
        if not 0 <= update.shard < self.n_shards:
            raise InvalidValue(f"update from unknown shard {update.shard}")
        for u in self.shards[update.shard].on_update(update):
            self._write(u)

    def _write(self, update: Update) -> None:
        if update.keys.size and int(update.keys.max()) >= self.weights.size:
            raise InvalidValue(f"update key outside model {self.spec.name!r}")
        self.weights[update.keys] = update.values
        self.updates_applied += 1

    def checksums(self) -> dict[str, list[int]]:
        """Per shard: [epoch, seq, crc32 of our copy of that shard's slots]."""
        return {str(s.shard): [s.epoch, s.seq,
                               weights_checksum(self.weights[s.shard::self.n_shards])]
                for s in self.shards}

    def score(self, batch: Batch) -> np.ndarray:
        """Probabilities for every event of the batch; refuses while any shard is out of sync."""
        if not self.ready:
            syncing = [s.shard for s in self.shards if not s.in_sync]
            raise NotReady(f"model {self.spec.name!r} is not ready: shard(s) {syncing} syncing")
        features = self.featurizer.featurize(batch)
        slots = slots_of(features.ids, self.spec.bits)
        return sigmoid(margins(features, self.weights[slots])).astype(np.float32)
