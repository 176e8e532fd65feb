"""Each vectorized optimizer against a plain per-coordinate reference written from the paper."""
import math

import numpy as np
import pytest

from common.config import ModelSpec, OptimizerSpec
from ps.optim import make_optimizer
from ps.store import ModelShard
from common.errors import InvalidValue


def ref_ftrl(steps, alpha, beta, l1, l2):
    """McMahan et al. 2013, Algorithm 1, one coordinate."""
    z = n = 0.0
    w = 0.0
    for g in steps:
        sigma = (math.sqrt(n + g * g) - math.sqrt(n)) / alpha
        z += g - sigma * w
        n += g * g
        w = 0.0 if abs(z) <= l1 else -(z - math.copysign(l1, z)) / ((beta + math.sqrt(n)) / alpha + l2)
    return w


def ref_adagrad(steps, lr, beta, l1, l2):
    w = g2 = 0.0
    for g in steps:
        g = g + l2 * w
        g2 += g * g
        step = lr / (beta + math.sqrt(g2))
        w = w - step * g
        w = math.copysign(max(abs(w) - step * l1, 0.0), w)
    return w


def ref_sgd(steps, lr, beta, l1, l2):
    w = 0.0
    for g in steps:
        w = w - lr * (g + l2 * w)
        w = math.copysign(max(abs(w) - lr * l1, 0.0), w)
    return w


REFS = {"ftrl": ref_ftrl, "adagrad": ref_adagrad, "sgd": ref_sgd}


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.5, 0.0), (0.0, 2.0), (0.3, 1.0)])
def test_vectorized_update_matches_reference(name, l1, l2):
    spec = OptimizerSpec(name, learning_rate=0.1, beta=1.0, l1=l1, l2=l2)
    opt = make_optimizer(spec)
    state = opt.init_state(64)
    rng = np.random.default_rng(7)
    history = {r: [] for r in range(64)}
    for _ in range(30):
        rows = np.sort(rng.choice(64, size=20, replace=False))
        grads = rng.normal(0, 1, 20).astype(np.float32)
        opt.apply(state, rows, grads)
        for r, g in zip(rows, grads):
            history[r].append(float(g))
    expected = np.array([REFS[name](history[r], 0.1, 1.0, l1, l2) for r in range(64)])
    np.testing.assert_allclose(state["w"], expected, rtol=2e-4, atol=1e-6)
    assert np.any(state["w"] != 0)


def test_ftrl_l1_gives_exact_zeros():
    opt = make_optimizer(OptimizerSpec("ftrl", 0.1, 1.0, l1=5.0))
    state = opt.init_state(10)
    opt.apply(state, np.arange(10), np.full(10, 0.1, np.float32))
    assert np.all(state["w"] == 0.0)


def test_store_validates_before_changing_anything():
    store = ModelShard(ModelSpec("m", bits=8), shard=1, n_shards=2)
    keys = np.array([1, 3, 5], np.uint64)
    store.push(keys, np.ones(3, np.float32))
    before = {k: v.copy() for k, v in store.state.items()}
    for bad_keys, grads in [(np.array([1, 3, 4], np.uint64), np.ones(3, np.float32)),
                            (np.array([5, 3, 1], np.uint64), np.ones(3, np.float32)),
                            (np.array([1, 3, 257], np.uint64), np.ones(3, np.float32))]:
        with pytest.raises(InvalidValue):
            store.push(bad_keys, grads)
    for k in before:
        np.testing.assert_array_equal(store.state[k], before[k])
    np.testing.assert_array_equal(store.slots_of_rows(np.array([0, 1, 2])), [1, 3, 5])
