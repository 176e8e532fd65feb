"""Logistic regression over hashed binary features, in numpy.

A batch's features are reduced to the unique slots they touch; the worker pulls those, scores
the batch, and sums the log-loss gradient per unique slot with one bincount.
"""
from __future__ import annotations

import numpy as np

from common.features import Features
from common.linear import margins, sigmoid
from worker.keys import BatchKeys


def predict(features: Features, keys: BatchKeys, weights: np.ndarray) -> np.ndarray:
    """Probabilities of every event, given the pulled weights of `keys.slots`.

    The unique weights are widened to float64 before the gather (bincount sums in float64 and
    would otherwise convert every entry's copy), and gathered with `take` (cheaper than fancy
    indexing for the same sums)."""
    return sigmoid(margins(features, weights.astype(np.float64).take(keys.inverse)))


def gradients(features: Features, keys: BatchKeys, p: np.ndarray, labels: np.ndarray,
              sample_weights: np.ndarray | None = None) -> np.ndarray:
    """d(log loss)/d(weight) summed over the batch, one value per unique slot."""
    err = p - labels
    if sample_weights is not None:
        err = err * sample_weights
    return np.bincount(keys.inverse, weights=err.take(features.rows),
                       minlength=keys.slots.size).astype(np.float32)
