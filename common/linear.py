"""Logistic-regression scoring shared by worker (progressive validation) and serving replica.

Both sides score with this one function, so a replica answers exactly what the trainer saw.
"""
from __future__ import annotations

import numpy as np

from common.features import Features


def sigmoid(margin: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -35.0, 35.0)))


def margins(features: Features, entry_weights: np.ndarray) -> np.ndarray:
    """Sum of the weights of each event's features (one bincount over the whole batch)."""
    return np.bincount(features.rows, weights=entry_weights, minlength=features.n)


def logloss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))
