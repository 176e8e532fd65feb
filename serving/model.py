"""A whole model in a replica's memory: weights, per-shard sync state, vectorized scoring.

Writing an update is split in three steps so the replica can apply a huge update in chunks
and answer reads between them: `accept_update` (validate, run the Clone-pattern state machine;
returns what to write), `write` (a slice of an update's keys, in place) and `finish` (the update
is fully written: only now does `version` include it). `apply_update` does all three at once.
"""
from __future__ import annotations

import time

import numpy as np

from common.checksum import weights_checksum
from common.config import ModelSpec
from common.errors import InvalidInstance, InvalidValue, NotReady
from common.declaration import Declaration
from common.features import Batch, Features, FeatureSpec, Featurizer, columnarize
from common.features.conform import conform
from common.instances import check_features  # noqa: F401  (also imported from here)
from common.linear import instance_margins, margins, sigmoid
from common.messages import Update
from common.sharding import slots_of
from serving.sync import ShardSync


class ServingModel:
    """Weights are one float32 array of 2**bits slots; each slot is one float, so an update
    writing slots in place can never leave a torn row for a concurrent read.

    `version` (per shard: the sequence number of the last update batch *fully* written) is what
    every answer declares. While a batch is being written in chunks, a read may already see
    some of its slots at their new values but never a slot half written, and never a version
    that claims more than has been written.
    """

    def __init__(self, spec: ModelSpec, features: FeatureSpec, n_shards: int):
        self.spec = spec
        self.n_shards = n_shards
        self.weights = np.zeros(spec.slots, dtype=np.float32)
        self.featurizer = Featurizer(features)
        self.declared: Declaration | None = None  # the model's input, once its source declared it
        self.shards = [ShardSync(k) for k in range(n_shards)]
        self.applied = [-1] * n_shards  # per shard: seq of the last fully written update
        self.updates_applied = 0

    @property
    def ready(self) -> bool:
        return all(s.in_sync for s in self.shards)

    @property
    def version(self) -> list[int]:
        return list(self.applied)

    def version_key(self) -> tuple:
        """(epoch, seq) per shard: equal keys mean equal weights (a seq alone repeats after a
        shard restarts)."""
        return tuple((s.epoch, a) for s, a in zip(self.shards, self.applied))

    def staleness_ms(self) -> float:
        oldest = min(s.confirmed_at for s in self.shards)
        return round((time.monotonic() - oldest) * 1000.0, 3)

    def declare(self, declaration: Declaration) -> None:
        """Featurize reads as the model's declaration says (a shard's snapshot carries it):
        its features, and its schema's kinds (`conform`: `{"user": 196}` is an id if the
        source's user column was)."""
        if self.declared is not None and self.declared.to_dict() == declaration.to_dict():
            return
        self.declared = declaration
        self.featurizer = Featurizer(declaration.feature_spec())

    # --- snapshots and updates ----------------------------------------------------------------

    def load_snapshot(self, shard: int, n_shards: int, epoch: int, seq: int,
                      values: np.ndarray) -> list[Update]:
        """Write a shard's snapshot; returns the buffered updates still to write after it."""
        if n_shards != self.n_shards:
            raise InvalidValue(f"snapshot from a {n_shards}-shard cluster, expected {self.n_shards}")
        if not 0 <= shard < self.n_shards:
            raise InvalidValue(f"snapshot from unknown shard {shard}")
        expected = self.weights[shard::n_shards].shape
        if values.shape != expected and values.shape != (0, *expected[1:]):
            raise InvalidValue(f"snapshot of shard {shard} has values of shape "
                               f"{list(values.shape)}, expected {list(expected)}")
        self.weights[shard::n_shards] = values if values.shape[0] else 0.0  # none: all 0
        self.applied[shard] = seq
        return self.shards[shard].on_snapshot(epoch, seq)

    def apply_snapshot(self, shard: int, n_shards: int, epoch: int, seq: int,
                       values: np.ndarray) -> None:
        for update in self.load_snapshot(shard, n_shards, epoch, seq, values):
            self.write(update)
            self.finish(update)

    def accept_update(self, update: Update) -> list[Update]:
        """Validate an update and feed it to its shard's sync state; returns the updates to
        write now, in order (none while buffering, for a duplicate, or on a gap). A bad update
        raises InvalidValue and changes nothing."""
        if not 0 <= update.shard < self.n_shards:
            raise InvalidValue(f"update from unknown shard {update.shard}")
        keys, values = update.keys, update.values
        if keys.ndim != 1 or values.shape != (keys.size, *self.weights.shape[1:]):
            raise InvalidValue(f"update has {keys.shape} keys but {values.shape} values")
        if keys.size and int(keys.max()) >= self.weights.shape[0]:
            raise InvalidValue(f"update key outside model {self.spec.name!r}")
        return self.shards[update.shard].on_update(update)

    def write(self, update: Update, start: int = 0, stop: int | None = None) -> None:
        """Write keys [start, stop) of an accepted update in place. Its keys are below the
        model's size (`accept_update`), so uint64 keys as int64 are the same numbers, and
        indexing with them skips the cast numpy makes of a uint64 index."""
        keys = update.keys[start:stop]
        if keys.dtype == np.uint64:
            keys = keys.view(np.int64)
        self.weights[keys] = update.values[start:stop]

    def finish(self, update: Update) -> None:
        """The update is fully written: the version now includes it."""
        self.applied[update.shard] = update.seq
        self.updates_applied += 1

    def apply_update(self, update: Update) -> None:
        for u in self.accept_update(update):
            self.write(u)
            self.finish(u)

    def checksums(self) -> dict[str, list[int]]:
        """Per shard: [epoch, seq, crc32 of our copy of that shard's slots]."""
        return {str(s.shard): [s.epoch, self.applied[s.shard],
                               weights_checksum(self.weights[s.shard::self.n_shards])]
                for s in self.shards}

    # --- scoring ------------------------------------------------------------------------------

    def check_ready(self) -> None:
        """Refuse a read while any shard is out of sync. The one readiness check of a read:
        the replica calls it once per request, before its cache, so the scoring methods below
        do not check again."""
        if not self.ready:
            syncing = [s.shard for s in self.shards if not s.in_sync]
            raise NotReady(f"model {self.spec.name!r} is not ready: shard(s) {syncing} syncing")

    def score(self, batch: Batch) -> np.ndarray:
        """Probabilities for every event of the batch (conformed to the declared schema)."""
        if self.declared is not None:
            batch = conform(batch, self.declared.schema)
        return self.score_features(self.featurizer.featurize(batch))

    def score_events(self, instances) -> np.ndarray:
        """Probabilities for feature-dict instances, ``score(columnarize(instances))``: the
        path of every predict request."""
        return self.score(columnarize(instances, with_labels=False))

    def score_features(self, features: Features) -> np.ndarray:
        """Probabilities for features already hashed (one vectorized pass over the batch)."""
        return sigmoid(margins(features, self._weights_of(features.ids))).astype(np.float32)

    def score_csr(self, offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Probabilities for pre-hashed instances in CSR form (checked by `check_csr`): bit for
        bit what `score_features` gives for the same instances."""
        return sigmoid(instance_margins(offsets, self._weights_of(ids))).astype(np.float32)

    def _weights_of(self, ids: np.ndarray) -> np.ndarray:
        # slots are below 2**32: as int64 (the same bits), take() gathers without the
        # per-element index cast that indexing with uint64 costs
        return self.weights.take(slots_of(ids, self.spec.bits).view(np.int64))


def check_csr(offsets: np.ndarray, ids: np.ndarray, max_instances: int) -> None:
    """Validate pre-hashed instances as they arrive (`PredictIds`, CSR form); raises
    InvalidInstance naming what is wrong."""
    if offsets.ndim != 1 or ids.ndim != 1:
        raise InvalidInstance(f"offsets and ids must be 1-D, got shapes {list(offsets.shape)} "
                              f"and {list(ids.shape)}")
    n = offsets.size - 1
    if not 0 <= n <= max_instances:
        raise InvalidInstance(f"offsets must hold one entry per instance and one more, for at "
                              f"most {max_instances} instances; got {offsets.size} entries")
    if int(offsets[0]) != 0 or int(offsets[-1]) != ids.size:
        raise InvalidInstance(f"offsets must start at 0 and end at len(ids) = {ids.size}, got "
                              f"{int(offsets[0])} .. {int(offsets[-1])}")
    steps = np.diff(offsets)
    if n and int(steps.min()) < 0:
        i = int(np.flatnonzero(steps < 0)[0])
        raise InvalidInstance(f"offsets must never decrease: instance {i} ends before it starts "
                              f"({int(offsets[i])} > {int(offsets[i + 1])})")
