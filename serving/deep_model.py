"""A deep model in a replica's memory, scored with NumPy: `common.deep`'s math, which is what
the worker's TensorFlow learner and the exported SavedModel compute too.

The weights are one float32 array of (slots + dense rows, h0): row s holds slot s's sparse
weights, the rows after the slots the dense parameters (`common.deep.DeepLayout`). Updates
and snapshots write whole rows in place on the replica's one thread, between reads, so a read
never sees a row half written. A dense update is one row set like any other: dense parameters
reach replicas as fast as sparse ones.
"""
from __future__ import annotations

import numpy as np

from common.config import ModelSpec
from common.deep import DeepLayout, csr_sums, forward, row_sums
from common.features import Features, FeatureSpec
from common.sharding import slots_of
from serving.model import ServingModel


class DeepServingModel(ServingModel):
    """`ServingModel` with rows of h0 weights and the deep forward pass as its scoring."""

    def __init__(self, spec: ModelSpec, features: FeatureSpec, n_shards: int):
        super().__init__(spec, features, n_shards)
        self.layout = DeepLayout.of(spec)
        self.weights = np.zeros((self.layout.total_keys, self.layout.width), np.float32)

    def dense(self) -> np.ndarray:
        """The flat dense parameters as this replica holds them now."""
        return self.layout.dense_of_rows(self.weights[self.layout.slots:])

    def score_features(self, features: Features) -> np.ndarray:
        sums = row_sums(features.n, features.rows, self._rows_of(features.ids))
        return forward(self.layout, sums, self.dense()).astype(np.float32)

    def score_csr(self, offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
        sums = csr_sums(offsets, self._rows_of(ids))
        return forward(self.layout, sums, self.dense()).astype(np.float32)

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        return self.weights.take(slots_of(ids, self.spec.bits).view(np.int64), axis=0)


def make_model(spec: ModelSpec, features: FeatureSpec, n_shards: int) -> ServingModel:
    """The serving model of a model of any kind."""
    cls = DeepServingModel if spec.kind == "deep" else ServingModel
    return cls(spec, features, n_shards)
