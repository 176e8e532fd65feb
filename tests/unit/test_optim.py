"""Each optimizer's numba per-coordinate functions against a plain reference written from its
paper; the shard's vectorized FTRL weight against the same closed form; the store's checks."""
import math

import numpy as np
import pytest

from common import optim
from common.config import OPTIMIZERS, ModelSpec, OptimizerSpec, load_spec
from common.errors import ConfigError, InvalidValue
from common.optim import adam
from ps.store import ModelShard


def ref_ftrl(state, g, alpha, beta, l1, l2, **_):
    """McMahan et al. 2013, Algorithm 1, one coordinate; state (z, n) -> new state, weight."""
    z, n = state

    def weight(z, n):
        if abs(z) <= l1:
            return 0.0
        return -(z - math.copysign(l1, z)) / ((beta + math.sqrt(n)) / alpha + l2)
    sigma = (math.sqrt(n + g * g) - math.sqrt(n)) / alpha
    z += g - sigma * weight(z, n)
    n += g * g
    return (z, n), weight(z, n)


def ref_adagrad(state, g, alpha, beta, l1, l2, **_):
    """Duchi et al. 2011, diagonal, with L2 in the gradient and L1 proximal."""
    w, g2 = state
    g = g + l2 * w
    g2 += g * g
    step = alpha / (beta + math.sqrt(g2))
    w = w - step * g
    w = math.copysign(max(abs(w) - step * l1, 0.0), w)
    return (w, g2), w


def ref_sgd(state, g, alpha, beta, l1, l2, **_):
    (w,) = state
    w = w - alpha * (g + l2 * w)
    w = math.copysign(max(abs(w) - alpha * l1, 0.0), w)
    return (w,), w


def ref_lazy_adam(state, g, alpha, l2, beta1, beta2, epsilon, **_):
    """Kingma and Ba 2015, Algorithm 1, with t the coordinate's own step count."""
    w, m, v, t = state
    g = g + l2 * w
    t += 1
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    w = w - alpha * (m / (1 - beta1 ** t)) / (math.sqrt(v / (1 - beta2 ** t)) + epsilon)
    return (w, m, v, t), w


REFS = {"ftrl": ref_ftrl, "adagrad": ref_adagrad, "sgd": ref_sgd, "lazy_adam": ref_lazy_adam}


def test_every_registered_optimizer_has_a_reference_and_the_spec_knows_it():
    assert set(REFS) == set(optim.SPARSE) == set(OPTIMIZERS)
    assert list(optim.CODES) == list(optim.SPARSE)


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.5, 0.0), (0.0, 2.0), (0.3, 1.0)])
def test_numba_update_matches_reference(name, l1, l2):
    if name == "lazy_adam" and l1:
        pytest.skip("lazy_adam has no L1 term")
    spec = OptimizerSpec(name, learning_rate=0.1, beta=1.0, l1=l1, l2=l2, beta1=0.8,
                         beta2=0.95, epsilon=1e-6)
    hp = optim.hyper_parameters(spec)
    module = optim.get(name)
    params = dict(alpha=0.1, beta=1.0, l1=l1, l2=l2, beta1=0.8, beta2=0.95, epsilon=1e-6)
    rng = np.random.default_rng(7)
    k = 32
    st = np.zeros((k, len(module.COLUMNS)))
    ref = [tuple(0.0 for _ in module.COLUMNS) for _ in range(k)]
    ref_w = [0.0] * k
    for _ in range(25):
        for r in rng.choice(k, size=12, replace=False):
            g = float(rng.normal(0, 2))
            module.update(st, r, g, hp)
            ref[r], ref_w[r] = REFS[name](ref[r], g, **params)
    np.testing.assert_allclose(st, np.array(ref), rtol=1e-12, atol=1e-14)
    weights = np.array([module.weight(st, r, hp) for r in range(k)])
    np.testing.assert_allclose(weights, ref_w, rtol=1e-12, atol=1e-14)
    assert np.any(weights != 0)
    cols = {c: st[:, j].astype(np.float32) for j, c in enumerate(module.COLUMNS)}
    np.testing.assert_allclose(module.weights(cols, spec), ref_w, rtol=1e-5, atol=1e-6)


def test_dense_adam_matches_reference():
    hp = optim.hyper_parameters(OptimizerSpec("adam", 0.01, l2=0.1))
    rng = np.random.default_rng(3)
    w, m, v = np.zeros(50), np.zeros(50), np.zeros(50)
    ref = [(0.0, 0.0, 0.0, 0.0)] * 50
    for t in range(1, 20):
        g = rng.normal(0, 1, 50)
        adam.step(w, m, v, g, t, hp)
        ref = [ref_lazy_adam(s, gi, alpha=0.01, l2=0.1, beta1=0.9, beta2=0.999,
                             epsilon=1e-8)[0] for s, gi in zip(ref, g)]
    np.testing.assert_allclose(np.stack([w, m, v], 1), np.array(ref)[:, :3], rtol=1e-12)


def test_ftrl_l1_gives_exact_zeros():
    hp = optim.hyper_parameters(OptimizerSpec("ftrl", 0.1, 1.0, l1=5.0))
    st = np.zeros((10, 2))
    for r in range(10):
        optim.ftrl.update(st, r, 0.1, hp)
    assert all(optim.ftrl.weight(st, r, hp) == 0.0 for r in range(10))


@pytest.mark.parametrize("text, message", [
    ("name = 'adam'", "use \"lazy_adam\""),
    ("name = 'lazy_adam'\nl1 = 0.5", "no L1 term"),
    ("beta1 = 1.0", "beta1 and beta2"),
])
def test_spec_refuses_optimizers_a_sparse_model_cannot_use(text, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(text=f"[models.m.optimizer]\n{text}")


def _store(name="ftrl"):
    return ModelShard(ModelSpec("m", bits=8, optimizer=OptimizerSpec(name)), shard=1,
                      n_shards=2, max_delta=100.0)


def test_store_adds_deltas_and_recomputes_ftrl_weights():
    store = _store()
    keys = np.array([1, 3, 5], np.uint64)
    deltas = np.array([[-1.0, 1.0], [2.0, 4.0], [0.0, 0.5]], np.float32)
    store.push(keys, deltas)
    store.push(keys, deltas)
    np.testing.assert_array_equal(store.pull(keys), 2 * deltas)
    spec = store.spec.optimizer
    z, n = 2 * deltas[:, 0], 2 * deltas[:, 1]
    np.testing.assert_allclose(store.weights[:3], -z / ((spec.beta + np.sqrt(n)) /
                                                         spec.learning_rate), rtol=1e-6)


@pytest.mark.parametrize("name, bad_keys, deltas, text", [
    ("ftrl", [1, 3, 4], np.ones((3, 2)), "not owned by shard 1"),
    ("ftrl", [5, 3, 1], np.ones((3, 2)), "sorted and unique"),
    ("ftrl", [1, 3, 257], np.ones((3, 2)), "outside model"),
    ("ftrl", [1, 3, 5], np.ones((3, 1)), "deltas of shape [3, 1] for 3 keys"),
    ("ftrl", [1, 3, 5], np.ones(3), "deltas of shape [3] for 3 keys"),
    ("ftrl", [1, 3, 5], [[1, 1], [1, 1], [1e3, 1]], "exceeds max_delta = 100"),
    ("ftrl", [1, 3, 5], [[1, 1], [1, -2], [1, 1]], "make n of key 3 negative"),
    ("adagrad", [1, 3, 5], [[1, 1], [1, 1], [1, -1.5]], "make g2 of key 5 negative"),
    ("lazy_adam", [1, 3, 5], [[0, 0, 0, -2]] * 3, "make t of key 1 negative"),
])
def test_store_validates_before_changing_anything(name, bad_keys, deltas, text):
    store = _store(name)
    keys = np.array([1, 3, 5], np.uint64)
    store.push(keys, np.ones((3, len(store.columns)), np.float32))
    before = {k: v.copy() for k, v in store.state.items()}
    with pytest.raises(InvalidValue, match=text.replace("[", r"\[").replace("]", r"\]")):
        store.push(np.array(bad_keys, np.uint64), np.array(deltas, np.float32))
    for k in before:
        np.testing.assert_array_equal(store.state[k], before[k])
    np.testing.assert_array_equal(store.slots_of_rows(np.array([0, 1, 2])), [1, 3, 5])


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.5, 0.0), (0.3, 1.0)])
def test_ftrl_scratch_columns_give_the_plain_update_bit_for_bit(l1, l2):
    """The kernel's FTRL path keeps each row's weight and sqrt(n) in scratch columns; it must
    give exactly (not approximately) what `weight` and `update` give."""
    hp = optim.hyper_parameters(OptimizerSpec("ftrl", 0.1, 1.0, l1=l1, l2=l2))
    rng = np.random.default_rng(11)
    k = 16
    plain = np.zeros((k, 2))
    plain[:, 0] = rng.normal(0, 2, k)
    plain[:, 1] = rng.exponential(3, k)
    cached = np.zeros((k, 2 + optim.layout("ftrl").scratch))
    cached[:, :2] = plain
    for r in range(k):
        optim.ftrl.begin(cached, r, hp)
    for _ in range(40):
        for r in rng.choice(k, size=6):
            g = float(rng.normal(0, 1))
            assert optim.ftrl.cached_weight(cached, r, hp) == optim.ftrl.weight(plain, r, hp)
            optim.ftrl.update(plain, r, g, hp)
            optim.ftrl.cached_update(cached, r, g, hp)
    np.testing.assert_array_equal(cached[:, :2], plain)
    assert [optim.ftrl.cached_weight(cached, r, hp) for r in range(k)] == \
        [optim.ftrl.weight(plain, r, hp) for r in range(k)]
