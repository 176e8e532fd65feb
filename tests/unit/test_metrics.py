"""Progressive metrics in constant memory: binned AUC within its stated bound of the exact AUC,
windowed figures over the recent events only, state that does not grow, bad batches refused."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from common.linear import logloss
from worker.metrics import ProgressiveMetrics, auc


def sorted_exact_auc(scores, labels):
    """Exact AUC by sorting, independent of worker.metrics.auc: for each positive, the
    negatives below it plus half those equal to it."""
    neg = np.sort(scores[labels == 0])
    pos = scores[labels == 1]
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * equal).sum() / (pos.size * neg.size))


def stream(rng, batches, size, signal=1.5):
    for _ in range(batches):
        margin = rng.normal(size=size) * signal - 1.0
        p = 1 / (1 + np.exp(-margin))
        y = (rng.random(size) < p).astype(np.float32)
        yield np.clip(p + rng.normal(scale=0.05, size=size), 0, 1), y


@pytest.mark.parametrize("size", [1, 300, 5000])  # both update paths: add.at and bincount
def test_binned_auc_is_within_its_bound_of_the_exact_auc(size):
    rng = np.random.default_rng(size)
    m = ProgressiveMetrics()
    ps, ys = [], []
    for p, y in stream(rng, 40000 // size + 1, size):
        m.update(p, y)
        ps.append(p)
        ys.append(y)
    p, y = np.concatenate(ps), np.concatenate(ys)
    exact = sorted_exact_auc(p, y)
    assert exact == pytest.approx(auc(p, y))
    bound = m.auc_error_bound()
    assert 0 < bound < 1e-3
    assert abs(m.auc() - exact) <= bound
    assert m.count == y.size
    assert m.logloss == pytest.approx(float(logloss(p, y).mean()))


def test_bunched_scores_report_a_large_bound_and_stay_inside_it():
    rng = np.random.default_rng(1)
    p = 0.3 + rng.random(20000) * 1e-5  # all in one or two bins of 2^-16
    y = (rng.random(20000) < 0.3 + (p - 0.3) * 3e4).astype(np.float32)
    m = ProgressiveMetrics()
    m.update(p, y)
    exact = sorted_exact_auc(p, y)
    assert m.auc_error_bound() > 0.2
    assert abs(m.auc() - exact) <= m.auc_error_bound()


def test_tied_scores_count_one_half_like_the_exact_auc():
    rng = np.random.default_rng(2)
    p = np.round(rng.random(3000), 1)
    y = (rng.random(3000) < p).astype(np.float32)
    m = ProgressiveMetrics()
    m.update(p, y)
    assert m.auc() == pytest.approx(sorted_exact_auc(p, y), abs=1e-12)


def test_recent_window_forgets_old_events():
    m = ProgressiveMetrics(window=1000, blocks=10)
    rng = np.random.default_rng(4)
    good = rng.random(5000) < 0.5
    m.update(np.where(good, 0.9, 0.1), good.astype(np.float32))  # one huge batch, perfect
    assert m.recent_auc() == 1.0
    for _ in range(20):  # then a model that has it backwards
        y = (rng.random(100) < 0.5).astype(np.float32)
        m.update(np.where(y == 1, 0.2, 0.8), y)
    assert m.recent_auc() == 0.0
    assert 900 <= m.recent_events <= 1000
    assert m.recent_logloss == pytest.approx(-np.log(0.2))
    assert 0.5 < m.auc() < 1.0 and m.count == 7000


def test_state_does_not_grow_with_events():
    rng = np.random.default_rng(5)
    m = ProgressiveMetrics(window=20000)
    batches = stream(rng, 1000, 256)
    for _ in range(10):
        m.update(*next(batches))
    size_after_10 = len(pickle.dumps(m))
    for p, y in batches:
        m.update(p, y)
    assert m.count == 1000 * 256
    assert len(pickle.dumps(m)) <= size_after_10 + 16  # counters are wider ints, no more


@pytest.mark.parametrize("p, y, err", [
    ([0.5, np.nan], [0, 1], "probabilities in"),
    ([0.5, 1.2], [0, 1], "probabilities in"),
    ([0.5, 0.5], [0, 2], "labels must be 0 or 1"),
    ([0.5, 0.5], [0, 0.5], "labels must be 0 or 1"),
    ([0.5], [0, 1], "one length"),
])
def test_bad_batches_are_refused_and_change_nothing(p, y, err):
    m = ProgressiveMetrics()
    m.update(np.array([0.2, 0.7]), np.array([0.0, 1.0]))
    before = pickle.dumps(m)
    with pytest.raises(ValueError, match=err):
        m.update(np.array(p, dtype=float), np.array(y, dtype=float))
    assert pickle.dumps(m) == before


def test_empty_metrics_are_nan():
    m = ProgressiveMetrics()
    m.update(np.zeros(0), np.zeros(0))
    assert np.isnan(m.logloss) and np.isnan(m.auc()) and np.isnan(m.recent_logloss)
    assert np.isnan(m.recent_auc()) and m.count == 0
