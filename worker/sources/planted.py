"""The planted model of the synthetic stream, and drawing Criteo-like events from it.

Why: to measure learning quality we need a stream whose best achievable logloss is known.
Every event has 13 heavy-tailed count fields ``i1..i13`` (NUMERIC, some missing) and 26
categorical fields ``c1..c26`` (int64 ids, Zipf-distributed over cardinalities from 10 to 1e5,
some missing). The planted model gives every (categorical field, value) and every (numeric
field, log2 bucket) a normal weight; the label is Bernoulli(sigmoid(bias + sum of weights)),
with the bias calibrated so that about a chosen click rate of events are clicks.

The numeric bucket is exactly `common.features.Transform("log2")`, and categorical features
are (field, value) pairs, so a linear model over the default featurization can represent the
planted model (up to hash collisions). Per-value weights are a pure function of (seed, field,
value) via `common.hashing`. Every draw is whole-array numpy work, field by field.
"""
from __future__ import annotations

import numpy as np

from common.features import CATEGORICAL, NUMERIC, Batch, Column, Transform
from common.hashing import combine, hash_ints, hash_string, splitmix64

NUMERIC_FIELDS = tuple(f"i{k}" for k in range(1, 14))
CATEGORICAL_FIELDS = tuple(f"c{k}" for k in range(1, 27))
FIELDS = NUMERIC_FIELDS + CATEGORICAL_FIELDS

# The shape of the stream (fixed; the seed changes values and weights, not difficulty).
CARDINALITIES = np.round(np.geomspace(10, 100_000, len(CATEGORICAL_FIELDS))).astype(np.int64)
ZIPF_EXPONENTS = np.linspace(1.05, 1.35, len(CATEGORICAL_FIELDS))[::-1].copy()
CAT_MISSING = np.array([0.0] * 18 + [0.05, 0.1, 0.2, 0.3, 0.4, 0.4, 0.35, 0.25])
CAT_SCALES = np.linspace(0.33, 0.21, len(CATEGORICAL_FIELDS))
# Counts: floor(scale * Lomax(alpha)), a heavy-tailed law drawn by inverse CDF.
NUM_SCALES = np.geomspace(0.5, 3000.0, len(NUMERIC_FIELDS))[
    [3, 0, 8, 1, 12, 5, 2, 9, 4, 6, 11, 7, 10]]
NUM_ALPHAS = np.linspace(1.3, 3.0, len(NUMERIC_FIELDS))
NUM_MISSING = np.array([0.4, 0.1, 0.2, 0.2, 0.1, 0.25, 0.1, 0.1, 0.1, 0.4, 0.1, 0.35, 0.2])
NUM_SCALE = 0.18  # weight scale of a numeric bucket
_TABLE_LIMIT = 1 << 20  # cache weights of fields with at most this many values
_BUCKET_OFFSET = 64  # numeric buckets are cached for [-64, 64]
_LOG2 = Transform("log2")


def planted_normal(seed: int, field: str, values: np.ndarray) -> np.ndarray:
    """A standard normal per value, a pure function of (seed, field, value) (Box-Muller)."""
    key = combine(np.array([hash_string(field)], np.uint64), hash_ints(np.array([seed])))
    h1 = combine(np.full(np.shape(values), key[0], dtype=np.uint64), hash_ints(values))
    h2 = splitmix64(h1)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Expected logloss (nats) of predicting p when the truth is Bernoulli(p)."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


class PlantedModel:
    """The true weights of a stream: which (field, value) pushes the click odds how far.

    Why weights are computed, not stored: a pure function of (seed, field, value) needs no
    table for the large cardinalities, and any chunk of the stream can be redrawn on its own.
    Small cardinalities and numeric buckets are cached in tables built from that function.
    """

    def __init__(self, seed: int, signal: float = 1.0):
        self.seed = seed
        self.signal = signal
        self._cat_tables = [self._cat_weights_uncached(j, np.arange(k, dtype=np.int64))
                            if k <= _TABLE_LIMIT else None for j, k in enumerate(CARDINALITIES)]
        buckets = np.arange(-_BUCKET_OFFSET, _BUCKET_OFFSET + 1, dtype=np.int64)
        self._num_tables = [self.signal * NUM_SCALE * planted_normal(seed, f, buckets)
                            for f in NUMERIC_FIELDS]
        self.bias = 0.0

    def _cat_weights_uncached(self, j: int, values: np.ndarray) -> np.ndarray:
        scale = self.signal * CAT_SCALES[j]
        return scale * planted_normal(self.seed, CATEGORICAL_FIELDS[j], values)

    def categorical_weights(self, j: int, values: np.ndarray) -> np.ndarray:
        """Weights of values of categorical field j (index into CATEGORICAL_FIELDS)."""
        table = self._cat_tables[j]
        return table[values] if table is not None else self._cat_weights_uncached(j, values)

    def numeric_weights(self, j: int, values: np.ndarray) -> np.ndarray:
        """Weights of numeric field j for raw values (through their log2 bucket)."""
        return self.bucket_weights(j, _LOG2.bucketize(values))

    def bucket_weights(self, j: int, buckets: np.ndarray) -> np.ndarray:
        """Weights of numeric field j for log2 buckets."""
        buckets = np.clip(buckets, -_BUCKET_OFFSET, _BUCKET_OFFSET)
        return self._num_tables[j][buckets + _BUCKET_OFFSET]

    def weight(self, field: str, values) -> np.ndarray:
        """The planted weight of `values` of `field` (raw numbers for i*, ids for c*)."""
        values = np.asarray(values)
        if field in NUMERIC_FIELDS:
            return self.numeric_weights(NUMERIC_FIELDS.index(field), values)
        return self.categorical_weights(CATEGORICAL_FIELDS.index(field), values.astype(np.int64))


def _zipf_ranks(u: np.ndarray, cardinality: int, exponent: float) -> np.ndarray:
    """Ranks in [0, cardinality) with P(r) ~ (r+1)^-s: inverse CDF of a truncated power law.

    Computed in float32, which is much cheaper than float64 and only shifts a rank by one for
    a small fraction of draws: the stream's shape, not its exact values, is what matters.
    """
    top = np.float32((cardinality + 1.0) ** (1.0 - exponent) - 1.0)
    x = (np.float32(1.0) + u * top) ** np.float32(1.0 / (1.0 - exponent))
    return np.minimum(x.astype(np.int64) - 1, cardinality - 1)


def _lomax_counts(u: np.ndarray, scale: float, alpha: float) -> np.ndarray:
    """Heavy-tailed counts floor(scale * Lomax(alpha)) from uniforms u in [0, 1), as float64."""
    tail = (np.float32(1.0) - u) ** np.float32(-1.0 / alpha) - np.float32(1.0)
    return np.floor(scale * tail.astype(np.float64))


def count_buckets(counts: np.ndarray) -> np.ndarray:
    """Transform("log2") buckets of integer-valued numbers, via the exact float exponent.

    floor(log2(v)) is frexp's exponent - 1; for integers this equals the log2 formula
    (tested) and avoids computing a logarithm per value.
    """
    _, exponent = np.frexp(1.0 + np.abs(counts))
    return (np.sign(counts) * (exponent - 1)).astype(np.int64)


def draw_events(rng: np.random.Generator, n: int, model: PlantedModel) -> tuple[Batch, np.ndarray]:
    """n events and their margins (without bias): whole-array operations, field by field."""
    n_cat, n_num = len(CATEGORICAL_FIELDS), len(NUMERIC_FIELDS)
    u_value = rng.random((n_cat + n_num, n), dtype=np.float32)
    u_missing = rng.random((n_cat + n_num, n), dtype=np.float32)
    margin = np.zeros(n, np.float64)
    columns: dict[str, Column] = {}
    for j, name in enumerate(NUMERIC_FIELDS):
        present = u_missing[n_cat + j] >= NUM_MISSING[j]
        counts = _lomax_counts(u_value[n_cat + j][present], NUM_SCALES[j], NUM_ALPHAS[j])
        col = Column(NUMERIC, np.flatnonzero(present), counts)
        margin[col.rows] += model.bucket_weights(j, count_buckets(counts))
        columns[name] = col
    for j, name in enumerate(CATEGORICAL_FIELDS):
        present = u_missing[j] >= CAT_MISSING[j]
        ranks = _zipf_ranks(u_value[j][present], int(CARDINALITIES[j]), float(ZIPF_EXPONENTS[j]))
        col = Column(CATEGORICAL, np.flatnonzero(present), ranks)
        margin[col.rows] += model.categorical_weights(j, ranks)
        columns[name] = col
    return Batch(n, columns), margin


def calibrate_bias(margins: np.ndarray, click_rate: float) -> float:
    """The bias b with mean(sigmoid(b + margins)) == click_rate (bisection; monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(mid + margins)))) < click_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
