"""The worker's event-by-event learner: a batch's size does not change what is learned.

A shard is simulated by a float32 state table to which each batch's deltas are added, as a
real shard does; batch 1 then learns event by event with a float32 round trip after every
event, batch 4096 learns the whole stream in float64 in one call.
"""
from __future__ import annotations

import numpy as np
import pytest

from common import optim
from common.config import OptimizerSpec, load_spec
from common.features import Features, Featurizer
from worker.keys import KeyIndexer
from worker.models.linear import LinearLearner
from worker.models.prebuilt import Kernel
from worker.sources.synthetic import SyntheticStream, synthetic_spec_toml

BITS = 18


def run(stream_events: int, batch_size: int, opt: OptimizerSpec):
    spec = load_spec(text=synthetic_spec_toml(BITS))
    featurizer = Featurizer(spec.feature_spec("ctr"))
    indexer = KeyIndexer(BITS)
    learner = LinearLearner(opt)
    table = np.zeros((1 << BITS, len(learner.columns)), np.float32)
    source = SyntheticStream(stream_events, seed=3)
    probabilities = []
    while (batch := source.read(batch_size)) is not None:
        features = featurizer.featurize(batch)
        keys = indexer.index(features.ids)
        rows = keys.slots.astype(np.int64)
        p, deltas = learner.learn(features, keys, table[rows], batch.labels, batch.weights)
        table[rows] += deltas
        probabilities.append(p)
    module = optim.get(opt.name)
    cols = {c: table[:, j] for j, c in enumerate(module.COLUMNS)}
    return np.concatenate(probabilities), module.weights(cols, opt)


@pytest.mark.parametrize("name, lr", [("ftrl", 0.05), ("adagrad", 0.05), ("sgd", 0.02),
                                      ("lazy_adam", 0.002)])
def test_batch_1_and_batch_4096_learn_the_same(name, lr):
    opt = OptimizerSpec(name, learning_rate=lr, l2=0.1 if name != "ftrl" else 0.0)
    p1, w1 = run(3000, 1, opt)
    p4096, w4096 = run(3000, 4096, opt)
    assert p1.shape == (3000,)
    np.testing.assert_allclose(p1, p4096, atol=1e-5)
    np.testing.assert_allclose(w1, w4096, rtol=1e-3, atol=1e-6)
    assert np.count_nonzero(w1) > 100


def test_every_event_is_predicted_from_the_state_including_the_ones_before_it():
    """Two identical events in one batch: the second is scored after the first was learned."""
    spec = load_spec(text=synthetic_spec_toml(BITS))
    featurizer = Featurizer(spec.feature_spec("ctr"))
    batch = SyntheticStream(1, seed=1).read(1)
    learner = LinearLearner(OptimizerSpec("ftrl", learning_rate=0.5))
    once = featurizer.featurize(batch)
    twice = Features(2, np.concatenate([once.rows, once.rows + 1]),
                     np.concatenate([once.ids, once.ids]))
    keys = KeyIndexer(BITS).index(twice.ids)
    p, deltas = learner.learn(twice, keys, np.zeros((keys.slots.size, 2), np.float32),
                              np.ones(2, np.float32))
    assert p[0] == 0.5 and p[1] > 0.5
    assert np.all(deltas[:, 1] > 0)


def test_group_by_event_is_a_stable_counting_sort():
    rows = np.array([2, 0, 2, 1, 0, 2], np.int64)
    inverse = np.array([10, 11, 12, 13, 14, 15], np.int64)
    offsets, entries = Kernel().group_by_event(4, rows, inverse)
    assert offsets.tolist() == [0, 2, 3, 6, 6]
    assert entries.tolist() == [11, 14, 13, 10, 12, 15]
    offsets, entries = Kernel().group_by_event(3, rows, inverse)  # the last event has entries
    assert offsets.tolist() == [0, 2, 3, 6]
    assert entries.tolist() == [11, 14, 13, 10, 12, 15]


def test_events_without_features_are_predicted_at_one_half_and_change_nothing():
    from common.features import Features
    from worker.keys import BatchKeys
    learner = LinearLearner(OptimizerSpec("ftrl"))
    empty = Features(3, np.zeros(0, np.int64), np.zeros(0, np.uint64))
    keys = BatchKeys(np.zeros(0, np.uint64), np.zeros(0, np.int32))
    p, deltas = learner.learn(empty, keys, np.zeros((0, 0), np.float32), np.ones(3, np.float32))
    assert p.tolist() == [0.5, 0.5, 0.5] and deltas.shape == (0, 2)


def test_features_grouped_by_event_learn_the_same_without_their_rows():
    """Features of entries come grouped by event with no rows (`common.features.Features`): a
    linear learner learns from the offsets, never makes the rows, and learns what it learns
    from the same pairs given with their rows."""
    rng = np.random.default_rng(4)
    counts = rng.integers(1, 9, 200)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ids = rng.integers(0, 1 << 40, int(offsets[-1]), dtype=np.uint64)
    labels = (rng.random(200) < 0.4).astype(np.float32)
    grouped = Features(200, None, ids, offsets)
    with_rows = Features(200, np.repeat(np.arange(200), counts), ids)
    learned = []
    for features in (grouped, with_rows):
        keys = KeyIndexer(BITS).index(features.ids)
        state = np.zeros((keys.slots.size, 2), np.float32)
        learned.append(LinearLearner(OptimizerSpec("ftrl")).learn(features, keys, state, labels))
    assert grouped._rows is None
    np.testing.assert_array_equal(learned[0][0], learned[1][0])
    np.testing.assert_array_equal(learned[0][1], learned[1][1])
