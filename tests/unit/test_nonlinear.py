"""The planted pairwise stream: deterministic, its margins the pairwise products it claims,
and out of a linear model's reach."""
from __future__ import annotations

import numpy as np

from worker.sources import open_source
from worker.sources.nonlinear import FIELDS, NonlinearStream, PlantedPairwise


def test_margins_are_the_sum_of_pairwise_products():
    model = PlantedPairwise(3)
    rng = np.random.default_rng(0)
    values = [rng.integers(0, t.shape[0], 5) for t in model.tables]
    want = np.zeros(5)
    for i in range(len(FIELDS)):
        for j in range(i + 1, len(FIELDS)):
            want += model.scale * np.sum(model.tables[i][values[i]] * model.tables[j][values[j]],
                                         axis=1)
    np.testing.assert_allclose(model.margins(values), want, rtol=1e-12)


def test_stream_is_deterministic_and_has_a_known_floor():
    a, b = NonlinearStream(5000, 2), open_source("nonlinear:5000:2")
    assert isinstance(b, NonlinearStream) and b.name == "nonlinear:5000:2"
    x, y = a.read(5000), b.read(5000)
    for name in FIELDS:
        np.testing.assert_array_equal(x.columns[name].values, y.columns[name].values)
    np.testing.assert_array_equal(x.labels, y.labels)
    assert 0.15 < x.labels.mean() < 0.3  # calibrated click rate
    # the floor is far below what knowing each value's average effect gives
    assert a.bayes_logloss < 0.33
    p = a.true_probabilities
    assert abs(a.oracle_logloss - a.bayes_logloss) < 0.02 and p.std() > 0.15


def test_each_values_average_effect_carries_little_signal():
    """A linear model can only learn each value's mean logit; those explain little of it."""
    s = NonlinearStream(60000, 1)
    batch = s.read(60000)
    logit = np.log(s.true_probabilities / (1 - s.true_probabilities))
    explained = np.zeros_like(logit)
    for name in FIELDS:
        v = batch.columns[name].values
        means = np.bincount(v, weights=logit - logit.mean()) / np.maximum(np.bincount(v), 1)
        explained += means[v]
    assert np.var(logit - logit.mean() - explained) > 0.8 * np.var(logit)
