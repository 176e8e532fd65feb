"""A planted nonlinear stream: pairwise products of planted field embeddings make the logit.

Why: a linear model over the hashed features is the right model for the planted stream of
`worker.sources.planted`, so it cannot show what a deep model adds. Here every value of each
of `FIELDS` (categorical ids, Zipf-distributed) has a planted embedding u of `DIM` normals, a
pure function of (seed, field, value, coordinate), and

    logit = bias + scale * sum over field pairs i < j of <u_i, u_j>

(a factorization machine without its linear part), with the bias calibrated to a click rate.
A linear model sees each value's average effect only, which the pairwise terms mostly cancel;
the deep model's sparse layer sums one learned row per field and its MLP can form the square of
that sum, which holds every pairwise product. The Bayes-optimal log loss is known as for the
linear stream: the mean binary entropy of the true probabilities (`bayes_logloss`).
"""
from __future__ import annotations

import numpy as np

from common.features import CATEGORICAL, Batch, Column
from worker.sources.planted import _zipf_ranks, planted_normal
from worker.sources.synthetic import SyntheticStream

FIELDS = tuple(f"f{k}" for k in range(1, 9))
CARDINALITIES = np.round(np.geomspace(10, 500, len(FIELDS))).astype(np.int64)
ZIPF_EXPONENT = 1.1
DIM = 4
SCALE = 0.45 ** 2  # per-coordinate product scale: the logit's std is about 2


class PlantedPairwise:
    """The true embeddings of every (field, value): tables, since cardinalities are small."""

    def __init__(self, seed: int, signal: float = 1.0):
        self.seed = seed
        self.scale = SCALE * signal
        self.tables = [np.stack([planted_normal(seed, f"{name}/{d}", np.arange(card))
                                 for d in range(DIM)], axis=1)
                       for name, card in zip(FIELDS, CARDINALITIES)]
        self.bias = 0.0

    def margins(self, values: list[np.ndarray]) -> np.ndarray:
        """scale * sum_{i<j} <u_i, u_j> for per-field value arrays (one value per event)."""
        u = np.stack([t[v] for t, v in zip(self.tables, values)])  # (fields, n, DIM)
        total = u.sum(axis=0)
        return self.scale * 0.5 * ((total ** 2).sum(axis=1) - (u ** 2).sum(axis=(0, 2)))


class NonlinearStream(SyntheticStream):
    """`events` events of the pairwise planted model: a source like `SyntheticStream`, with
    the same determinism (chunk k from its own seed) and the same Bayes and oracle figures.
    Every event has every field."""

    kind = "nonlinear"

    @staticmethod
    def planted(seed: int, signal: float) -> PlantedPairwise:
        return PlantedPairwise(seed, signal)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[Batch, np.ndarray]:
        u = rng.random((len(FIELDS), n), dtype=np.float32)
        values = [_zipf_ranks(u[j], int(c), ZIPF_EXPONENT) for j, c in enumerate(CARDINALITIES)]
        rows = np.arange(n, dtype=np.int64)
        columns = {name: Column(CATEGORICAL, rows, v) for name, v in zip(FIELDS, values)}
        return Batch(n, columns), self.model.margins(values)
