"""Logistic regression over hashed binary features, learned event by event on the worker.

A batch's features are reduced to the unique slots they touch; the worker pulls those rows'
optimizer state, learns the batch in the compiled kernel (`worker.models.kernel`) on a float64
copy, and pushes the change of every state column per row. A shard adds the changes, so a
single worker learns at any batch size what one-event-at-a-time learning gives, up to float32
rounding of the state between batches.
"""
from __future__ import annotations

import numpy as np

from common import optim
from common.config import OptimizerSpec
from common.features import Features
from worker.keys import BatchKeys
from worker.models.prebuilt import Kernel, kernel


class LinearLearner:
    """The optimizer's code and hyper-parameters, fixed for a model, and one batch's learning."""

    # a trainer indexes the keys on its learning thread: reading and featurizing keep the
    # helper thread as busy as learning and pushing keep that one (`Trainer.send_pull`)
    keys_on_helper = False

    def __init__(self, spec: OptimizerSpec, compiled: Kernel | None = None):
        self.kernel = compiled or kernel()  # prebuilt when built, else numba's JIT
        self.kind = optim.CODES[spec.name]
        layout = optim.layout(spec.name)
        self.columns = layout.columns
        self.scratch = layout.scratch
        self.hp = optim.hyper_parameters(spec)
        self._block = np.empty((0, len(self.columns) + self.scratch), np.float64)

    def batch_keys(self, keys: BatchKeys, features: Features | None = None) -> BatchKeys:
        """The keys a batch pulls and pushes: the slots its features touch."""
        return keys

    def learn(self, features: Features, keys: BatchKeys, state: np.ndarray, labels: np.ndarray,
              importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(progressive probabilities of the events, float32 deltas of the pulled `state`)."""
        if state.size == 0 and keys.slots.size == 0:  # events without features: no rows pulled
            state = np.zeros((0, len(self.columns)), np.float32)
        if state.shape != (keys.slots.size, len(self.columns)):
            raise ValueError(f"pulled state of shape {list(state.shape)}, expected "
                             f"{[keys.slots.size, len(self.columns)]}")
        if features.offsets is not None:  # grouped by event already (rows not even made)
            offsets, entries = features.offsets, keys.inverse
        else:
            offsets, entries = self.kernel.group_by_event(features.n, features.rows,
                                                          keys.inverse)
        return self.kernel.learn_events(offsets, entries, labels, importance, state,
                                        self._block_of(state.shape[0]), self.kind, self.hp)

    def _block_of(self, rows: int) -> np.ndarray:
        """The float64 block the kernel learns on (state and scratch columns), kept across
        batches and grown as needed: a batch's rows fill it anew."""
        if self._block.shape[0] < rows:
            self._block = np.empty((max(rows, 2 * self._block.shape[0]),
                                    len(self.columns) + self.scratch), np.float64)
        return self._block[:rows]
