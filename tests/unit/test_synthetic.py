"""The synthetic planted-model stream: shape, determinism, learnability, files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common.features import CATEGORICAL, NUMERIC, Transform, concat_batches
from tests.unit.source_helpers import string_ids
from worker.sources import (CRITEO_SCHEMA, DelimitedSource, JsonLinesSource, SyntheticStream,
                            write_synthetic)
from worker.sources.planted import (CARDINALITIES, CATEGORICAL_FIELDS, NUMERIC_FIELDS,
                                    binary_entropy, count_buckets)

CHUNK = 2000


def same_batches(a, b) -> bool:
    if a.n != b.n or set(a.columns) != set(b.columns) or not np.array_equal(a.labels, b.labels):
        return False
    return all(np.array_equal(a.columns[k].rows, b.columns[k].rows)
               and np.array_equal(a.columns[k].values, b.columns[k].values) for k in a.columns)


def read_everything(stream, size):
    batches, probs = [], []
    while (batch := stream.read(size)) is not None:
        batches.append(batch)
        probs.append(stream.true_probabilities)
    return concat_batches(batches), np.concatenate(probs)


@pytest.fixture(scope="module")
def big():
    """60k events of seed 3 read in uneven batches, with their true probabilities."""
    stream = SyntheticStream(60_000, seed=3)
    batch, probs = read_everything(stream, 7_777)
    return stream, batch, probs


def test_fields_kinds_and_ranges(big):
    _, batch, _ = big
    assert set(batch.columns) == set(NUMERIC_FIELDS) | set(CATEGORICAL_FIELDS)
    assert len(NUMERIC_FIELDS) == 13 and len(CATEGORICAL_FIELDS) == 26
    for name in NUMERIC_FIELDS:
        col = batch.columns[name]
        assert col.kind == NUMERIC and col.values.dtype == np.float64
        assert np.all(col.values >= 0) and np.all(col.values == np.floor(col.values))
        assert 0.5 <= col.rows.size / batch.n <= 0.95  # 5-50% missing
    heavy = max(np.percentile(batch.columns[n].values, 99.9) / (np.median(batch.columns[n].values)
                                                                  + 1) for n in NUMERIC_FIELDS)
    assert heavy > 50  # heavy tails
    for name, cardinality in zip(CATEGORICAL_FIELDS, CARDINALITIES):
        col = batch.columns[name]
        assert col.kind == CATEGORICAL and col.values.dtype == np.int64
        assert col.values.min() >= 0 and col.values.max() < cardinality
        assert np.all(np.diff(col.rows) > 0)  # single-valued
    assert CARDINALITIES.min() <= 10 and CARDINALITIES.max() >= 100_000
    missing = [1 - batch.columns[n].rows.size / batch.n for n in CATEGORICAL_FIELDS]
    assert max(missing) > 0.25 and min(missing) == 0


def test_categorical_values_are_zipf_like(big):
    _, batch, _ = big
    values = batch.columns[CATEGORICAL_FIELDS[-1]].values  # cardinality 1e5
    counts = np.sort(np.bincount(values))[::-1]
    assert counts[0] > 100 * batch.n / CARDINALITIES[-1]  # head far above uniform
    assert counts[0] > 5 * counts[9] > 0  # and decaying
    assert np.unique(values).size > 5_000  # with a long tail of distinct values


def test_same_seed_same_stream_and_other_seed_differs():
    a = SyntheticStream(5_000, seed=11, chunk_size=CHUNK)
    b = SyntheticStream(5_000, seed=11, chunk_size=CHUNK)
    c = SyntheticStream(5_000, seed=12, chunk_size=CHUNK)
    for size in (1000, 333, 4000):
        x, y, z = a.read(size), b.read(size), c.read(size)
        assert same_batches(x, y)
        assert not same_batches(x, z)
        assert not np.array_equal(x.columns["c1"].values, z.columns["c1"].values)
    assert a.model.bias != c.model.bias


def test_chunks_are_reproducible_alone_and_streams_are_prefixes():
    long = SyntheticStream(7_000, seed=5, chunk_size=CHUNK)
    batch, probs = read_everything(long, 999)
    again = SyntheticStream(7_000, seed=5, chunk_size=CHUNK)
    chunk2, probs2 = again.chunk(2)
    assert same_batches(chunk2, batch.slice(2 * CHUNK, 3 * CHUNK))
    assert not same_batches(chunk2, batch.slice(CHUNK, 2 * CHUNK))  # chunks differ
    np.testing.assert_array_equal(probs2, probs[2 * CHUNK:3 * CHUNK])
    last, _ = again.chunk(3)
    assert last.n == 1_000
    with pytest.raises(IndexError):
        again.chunk(4)
    short = SyntheticStream(3_100, seed=5, chunk_size=CHUNK).read(10_000)
    assert same_batches(short, batch.slice(0, 3_100))


def test_read_sizes_end_and_probabilities(big):
    stream = SyntheticStream(5_000, seed=1, chunk_size=CHUNK)
    sizes = []
    for size in (1, 2500, 7, 10_000, 10):
        batch = stream.read(size)
        if batch is None:
            break
        sizes.append(batch.n)
        assert stream.true_probabilities.shape == (batch.n,)
        assert batch.labels.dtype == np.float32 and set(np.unique(batch.labels)) <= {0.0, 1.0}
    assert sizes == [1, 2500, 7, 5_000 - 2508]
    assert stream.read(10) is None and stream.stats.events == 5_000


def test_click_rate_and_calibration(big):
    _, batch, probs = big
    assert 0.19 <= batch.labels.mean() <= 0.25
    assert abs(batch.labels.mean() - probs.mean()) < 0.01
    for lo, hi in ((0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.0)):
        inside = (probs >= lo) & (probs < hi)
        assert inside.sum() > 1000
        assert abs(batch.labels[inside].mean() - probs[inside].mean()) < 0.03
    other = SyntheticStream(20_000, seed=8, click_rate=0.05).read(20_000)
    assert 0.035 <= other.labels.mean() <= 0.065


def test_planted_model_is_learnable_and_bayes_logloss_is_exact(big):
    stream, batch, probs = big
    assert stream.bayes_logloss == pytest.approx(binary_entropy(probs).mean(), rel=1e-9)
    rate = batch.labels.mean()
    constant = float(binary_entropy(np.array([rate]))[0])
    assert stream.bayes_logloss < constant - 0.05
    assert abs(stream.oracle_logloss - stream.bayes_logloss) < 0.01
    easier = SyntheticStream(20_000, seed=3, signal=2.0)
    easier.read(20_000)
    assert easier.bayes_logloss < stream.bayes_logloss - 0.05


def test_probabilities_follow_planted_weights(big):
    """logit(p) = bias + sum of the planted weights of the event's (field, value)s, where a
    numeric field's weight is looked up by the log2 bucket the featurizer uses."""
    stream, batch, probs = big
    margin = np.full(batch.n, stream.model.bias)
    for name, col in batch.columns.items():
        np.add.at(margin, col.rows, stream.model.weight(name, col.values))
    np.testing.assert_allclose(margin, np.log(probs / (1 - probs)), atol=1e-6)
    weights = stream.model.weight("c1", np.arange(CARDINALITIES[0]))
    assert weights.std() > 0.05 and np.unique(weights).size == CARDINALITIES[0]


def test_count_buckets_equal_the_log2_transform():
    counts = np.concatenate([np.arange(-3000, 3000), 2.0 ** np.arange(40), 2.0 ** np.arange(40) - 1,
                             np.random.default_rng(0).integers(0, 2**44, 10_000)]).astype(float)
    np.testing.assert_array_equal(count_buckets(counts), Transform("log2").bucketize(counts))


def test_write_tsv_and_jsonl_give_the_same_events(tmp_path):
    truth = SyntheticStream(2_500, seed=9, chunk_size=CHUNK).read(10_000)
    tsv = write_synthetic(tmp_path / "s.tsv", 2_500, seed=9, chunk_size=CHUNK)
    jsonl = write_synthetic(tmp_path / "s.jsonl", 2_500, seed=9, fmt="jsonl", chunk_size=CHUNK)
    assert len(tsv.read_text().splitlines()) == 2_500
    first = json.loads(jsonl.read_text().splitlines()[0])
    assert set(first) == {"label", "features"} and first["label"] in (0, 1)
    from_tsv = DelimitedSource(tsv, CRITEO_SCHEMA).read(10_000)
    from_jsonl = JsonLinesSource(jsonl).read(10_000)
    for got in (from_tsv, from_jsonl):
        assert got.n == 2_500
        np.testing.assert_array_equal(got.labels, truth.labels)
        for name, col in truth.columns.items():
            np.testing.assert_array_equal(got.columns[name].rows, col.rows)
            if col.kind == NUMERIC:
                np.testing.assert_array_equal(got.columns[name].values, col.values)
            else:
                assert string_ids(got.columns[name].values) == string_ids(col.values.astype(str))
    with pytest.raises(ValueError):
        write_synthetic(tmp_path / "x", 10, fmt="csv")

