"""A shard's slice of one model: weights plus optimizer state, with validated pull and push.

Plain object, no sockets: tests drive it directly and the shard node wires it to the network.
"""
from __future__ import annotations

import numpy as np

from common.config import ModelSpec
from common.errors import InvalidValue
from common.sharding import local_rows, shard_size
from ps.optim import make_optimizer


class ModelShard:
    """One model's rows that this shard owns (slot ``row * n_shards + shard``), stored densely
    with the optimizer's per-row state, so a pull is one gather and a push one vectorized
    optimizer step. It refuses keys the shard does not own before changing anything."""

    def __init__(self, spec: ModelSpec, shard: int, n_shards: int):
        self.spec = spec
        self.shard = shard
        self.n_shards = n_shards
        self.size = shard_size(spec.bits, n_shards, shard)
        self.optimizer = make_optimizer(spec.optimizer)
        self.state = self.optimizer.init_state(self.size)
        self.pushes = 0
        self.pulls = 0

    @property
    def weights(self) -> np.ndarray:
        return self.state["w"]

    def rows_for(self, keys: np.ndarray) -> np.ndarray:
        """Local rows of `keys`, after checking every invariant a message's keys must meet."""
        if keys.ndim != 1:
            raise InvalidValue("keys must be one-dimensional")
        if keys.size and int(keys[-1]) >= (1 << self.spec.bits):
            raise InvalidValue(f"key {int(keys[-1])} is outside model {self.spec.name!r} "
                               f"({self.spec.bits} bits)")
        if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            raise InvalidValue("keys must be sorted and unique")
        if keys.size and bool(np.any(keys % np.uint64(self.n_shards) != np.uint64(self.shard))):
            raise InvalidValue(f"keys not owned by shard {self.shard} of {self.n_shards}")
        return local_rows(keys, self.n_shards)

    def pull(self, keys: np.ndarray) -> np.ndarray:
        self.pulls += 1
        return self.weights[self.rows_for(keys)]

    def check_push(self, keys: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Local rows of a push, after validating what only the shard can judge (its keys,
        one gradient per key); raises InvalidValue and changes nothing. That gradients are
        finite the wire codec checked when it decoded the push."""
        rows = self.rows_for(keys)
        if grads.shape != keys.shape:
            raise InvalidValue(f"{grads.size} gradients for {keys.size} keys")
        return rows

    def apply(self, rows: np.ndarray, grads: np.ndarray) -> None:
        self.optimizer.apply(self.state, rows, grads)
        self.pushes += 1

    def push(self, keys: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Validate and apply summed gradients; returns the local rows changed."""
        rows = self.check_push(keys, grads)
        self.apply(rows, grads)
        return rows

    def slots_of_rows(self, rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.uint64) * np.uint64(self.n_shards) + np.uint64(self.shard)
