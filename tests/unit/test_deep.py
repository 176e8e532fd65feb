"""The deep sparse model's math and storage, without sockets: spec checks, layout, the TF step
against common.optim's Adam and lazy Adam, the TF forward against the NumPy one, the shard
store's checks, durability of its rows."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from common.config import load_spec
from common.deep import DeepLayout, csr_sums, forward, row_sums
from common.errors import ConfigError, InvalidValue
from common.features import Featurizer, columnarize
from common.optim import adam, hyper_parameters, lazy_adam
from ps.deep_store import DeepModelShard
from ps.durable import ShardState
from worker.keys import KeyIndexer

tf = pytest.importorskip("tensorflow")
from worker.models.deep import DeepLearner, logits_tf, split_dense  # noqa: E402

SPEC = """
[models.d]
kind = "deep"
bits = 10
hidden = [8, 4, 3]
crosses = [["user", "item"]]
[models.d.optimizer]
learning_rate = 0.01
l2 = 0.001
"""


def spec(text=SPEC, shards=2):
    s = load_spec(text=text)
    s.shards = shards
    return s


def events(n, seed=0):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 40, n), rng.integers(0, 20, n)
    labels = rng.random(n) < 1 / (1 + np.exp(-2 * np.sin(users * 1.3) * np.cos(items * 0.7)))
    return [{"label": int(y), "features": {"user": f"u{u}", "item": f"i{i}"}}
            for u, i, y in zip(users, items, labels)]


def test_deep_spec_defaults_and_checks():
    m = spec().model("d")
    assert (m.kind, m.hidden, m.activation, m.optimizer.name) == ("deep", [8, 4, 3], "relu",
                                                                  "lazy_adam")
    d = load_spec(text="[models.x]\nkind = 'deep'\n[models.y]\n").models
    assert d["x"].bits == 18 and d["x"].optimizer.learning_rate == 0.03
    assert d["y"].bits == 22 and d["y"].optimizer.name == "ftrl"  # linear defaults untouched
    for bad, words in [("hidden = []", "at least one hidden layer"),
                       ("hidden = [8, 0]", "1..4096"), ("hidden = [8, 2.5]", "whole number"),
                       ("activation = 'softmax'", "must be one of"),
                       ("[models.x.optimizer]\nname = 'ftrl'", "lazy_adam")]:
        with pytest.raises(ConfigError, match=words):
            load_spec(text=f"[models.x]\nkind = 'deep'\n{bad}")
    with pytest.raises(ConfigError, match="kind"):
        load_spec(text="[models.x]\nkind = 'cnn'")


def test_layout_places_dense_parameters_after_the_slots():
    lay = DeepLayout(10, (8, 4, 3))
    assert [n for n, _ in lay.shapes] == ["b0", "W1", "b1", "W2", "b2", "w_out", "b_out"]
    assert lay.dense_size == 8 + 32 + 4 + 12 + 3 + 3 + 1
    assert lay.dense_rows == 8 and lay.total_keys == 1024 + 8 and lay.row_width == 25
    flat = np.arange(lay.dense_size, dtype=np.float32)
    rows = lay.rows_of_dense(flat)
    assert rows.shape == (8, 8) and rows.ravel()[lay.dense_size:].tolist() == [0.0]
    np.testing.assert_array_equal(lay.dense_of_rows(rows), flat)
    assert lay.split(flat)[1].shape == (8, 4) and lay.split(flat)[-1].tolist() == [62.0]


def test_row_step_is_common_optims_lazy_adam_and_adam():
    rng = np.random.default_rng(1)
    k, h = 6, 5
    w, g = rng.normal(size=(k, h)), rng.normal(size=(k, h))
    m, v = rng.normal(size=(k, h)) * 0.1, rng.random((k, h)) * 0.1
    t = rng.integers(0, 5, k).astype(np.float64)
    hp = hyper_parameters(spec().model("d").optimizer)

    def rows(t):
        return np.concatenate([w, m, v, t[:, None]], 1).astype(np.float32)

    state = rows(t)
    new = state + lazy_adam.step_rows(state, g, hp)
    for i in range(k):  # lazy Adam: a row with its own step count
        for j in range(h):
            st = state[[i]][:, [j, h + j, 2 * h + j, 3 * h]].astype(np.float64)
            lazy_adam.update(st, 0, g[i, j], hp)
            np.testing.assert_allclose(new[i, [j, h + j, 2 * h + j, 3 * h]], st[0], rtol=1e-6,
                                       atol=1e-7)
    # dense Adam on a block whose rows all took the same steps
    state = rows(np.full(k, 3.0))
    new = state + lazy_adam.step_rows(state, g, hp)
    wf, mf, vf = (state[:, p * h:(p + 1) * h].astype(np.float64).ravel() for p in range(3))
    adam.step(wf, mf, vf, g.ravel().copy(), 4, hp)
    for p, want in enumerate((wf, mf, vf)):
        np.testing.assert_allclose(new[:, p * h:(p + 1) * h].ravel(), want, rtol=1e-6, atol=1e-7)


def test_summed_row_step_is_the_row_step_on_each_rows_summed_event_gradients():
    """The learner's step sums a sparse row's gradient from the gradients of the events that
    hold it (in CSR form), then steps the dense rows on their own gradients: the same bits as
    `step_rows` on those gradients summed (float32, in the same order) beforehand. A row no
    event holds gets a zero gradient, and still takes its step."""
    rng = np.random.default_rng(5)
    h, n, sparse, dense = 6, 40, 9, 3
    k = sparse + dense
    state = np.concatenate([rng.normal(size=(k, h)), rng.normal(size=(k, h)) * 0.1,
                            rng.random((k, h)) * 0.1, rng.integers(0, 4, (k, 1))],
                           1).astype(np.float32)
    g_events = rng.normal(size=(n, h)).astype(np.float32)
    holders = [np.sort(rng.choice(n, rng.integers(0, 6), replace=False)) for _ in range(sparse)]
    holders[4] = np.array([], np.int64)
    offsets = np.concatenate([[0], np.cumsum([e.size for e in holders])]).astype(np.int64)
    events = np.concatenate(holders).astype(np.int64)
    g_dense = rng.normal(size=(dense, h)).astype(np.float32)
    g = np.zeros((sparse + dense, h), np.float32)
    for r, held in enumerate(holders):
        for e in held:
            g[r] += g_events[e]
    g[sparse:] = g_dense
    hp = hyper_parameters(spec().model("d").optimizer)
    got = lazy_adam.step_summed_rows(state, g_events, offsets, events, g_dense, hp)
    want = lazy_adam.step_rows(state, g, hp)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got[4, 0] != 0.0 and got[4, -1] == 1.0  # the row no event holds (l2 moves it)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "elu"])
def test_tf_forward_matches_numpy_forward(activation):
    lay = DeepLayout(10, (6, 5, 4), activation)
    rng = np.random.default_rng(2)
    table = rng.normal(0, 0.5, (30, 6)).astype(np.float32)
    dense = rng.normal(0, 0.5, lay.dense_size).astype(np.float32)
    rows = rng.integers(0, 20, 200)
    inverse = rng.integers(0, 30, 200)
    sums = row_sums(20, rows, table[inverse])
    want = forward(lay, sums, dense)
    tf_sums = tf.math.unsorted_segment_sum(tf.gather(table, inverse), rows, 20)
    got = tf.math.sigmoid(logits_tf(lay, tf_sums, split_dense(lay, tf.constant(dense))))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=20))])
    np.testing.assert_allclose(csr_sums(offsets, table[inverse][np.argsort(rows, kind="stable")]),
                               sums, atol=1e-12)


def learner_batch(s, evs):
    learner = DeepLearner(s.model("d"))
    feats = Featurizer(s.feature_spec("d")).featurize(columnarize(evs, with_labels=True))
    keys = learner.batch_keys(KeyIndexer(s.model("d").bits).index(feats.ids))
    lay = learner.layout
    state = np.zeros((keys.slots.size, lay.row_width), np.float32)
    state[-lay.dense_rows:, :lay.width] = lay.rows_of_dense(lay.initial_dense())
    rng = np.random.default_rng(3)
    state[:-lay.dense_rows, :lay.width] = rng.normal(0, 0.3, (keys.slots.size - lay.dense_rows,
                                                             lay.width))
    return learner, feats, keys, state


def loss_of(lay, feats, keys, state, labels):
    w = state[:, :lay.width].astype(np.float64)
    sparse = keys.slots.size - lay.dense_rows
    p = forward(lay, row_sums(feats.n, feats.rows, w[:sparse][keys.inverse]),
                lay.dense_of_rows(w[sparse:]))
    return float(np.mean(-(labels * np.log(p) + (1 - labels) * np.log1p(-p))))


def test_one_step_is_adam_on_the_minibatch_gradient():
    """Progressive predictions are the forward pass before the step; the first Adam step from
    zero moments moves each parameter by lr against the sign of its gradient, which central
    differences of the NumPy loss give independently of TensorFlow."""
    s = spec()
    evs = events(64)
    learner, feats, keys, state = learner_batch(s, evs)
    labels = np.array([e["label"] for e in evs], np.float64)
    p, deltas = learner.learn(feats, keys, state, labels)
    lay = learner.layout
    sparse = keys.slots.size - lay.dense_rows
    w = state[:, :lay.width].astype(np.float64)
    want_p = forward(lay, row_sums(feats.n, feats.rows, w[:sparse][keys.inverse]),
                     lay.dense_of_rows(w[sparse:]))
    np.testing.assert_allclose(p, want_p, atol=1e-5)
    np.testing.assert_array_equal(deltas[:, -1], 1.0)  # every pulled row took one step
    lr, l2 = 0.01, 0.001
    checked = 0
    for r in list(range(0, sparse, max(1, sparse // 6))) + [sparse, sparse + 2, keys.slots.size - 1]:
        for j in range(lay.width):
            if r >= sparse and (r - sparse) * lay.width + j >= lay.dense_size:
                continue  # padding
            bumped = [state.copy(), state.copy()]
            bumped[0][r, j] += 1e-3
            bumped[1][r, j] -= 1e-3
            g = (loss_of(lay, feats, keys, bumped[0], labels)
                 - loss_of(lay, feats, keys, bumped[1], labels)) / 2e-3 + l2 * state[r, j]
            if abs(g) < 1e-4:
                continue
            assert deltas[r, j] == pytest.approx(-lr * np.sign(g), rel=1e-3), (r, j, g)
            checked += 1
    assert checked > 20


def test_learning_a_stream_lowers_the_loss():
    s = spec()
    evs = events(3000)
    learner, feats, keys, state = learner_batch(s, evs)
    labels = np.array([e["label"] for e in evs], np.float64)
    before = loss_of(learner.layout, feats, keys, state, labels)
    for _ in range(30):
        _p, deltas = learner.learn(feats, keys, state, labels)
        state = state + deltas
    assert loss_of(learner.layout, feats, keys, state, labels) < before - 0.05


def test_pairs_worked_out_with_the_keys_give_the_same_step():
    """A trainer hands the learner keys that already carry the step's (event, row) pairs; the
    step is bit for bit the one that works them out itself."""
    s = spec()
    evs = events(200, seed=4)
    learner, feats, keys, state = learner_batch(s, evs)
    labels = np.array([e["label"] for e in evs], np.float64)
    with_pairs = learner.batch_keys(KeyIndexer(s.model("d").bits).index(feats.ids), feats)
    assert with_pairs.pairs is not None and keys.pairs is None
    np.testing.assert_array_equal(with_pairs.slots, keys.slots)
    (p1, d1), (p2, d2) = (learner.learn(feats, k, state.copy(), labels)
                          for k in (keys, with_pairs))
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(d1.view(np.uint32), d2.view(np.uint32))


def test_compiled_patch_adds_what_the_generic_patch_adds():
    """The trainer's patch of its own pushes (`kernel.patch_rows`, one merge walk per push)
    against a searchsorted patch, on rows as wide as a deep model's, with pushes that share
    some keys with the pull, and rows whose shard had already applied some."""
    from worker.models.prebuilt import kernel
    rng = np.random.default_rng(6)
    slots = np.unique(rng.integers(0, 300, 120)).astype(np.uint64)
    state = rng.normal(size=(slots.size, 25)).astype(np.float32)
    applied = rng.integers(3, 6, slots.size)  # the highest own push each row's shard applied
    own = []
    for number in (4, 5, 6):
        keys = np.unique(rng.integers(0, 300, 80)).astype(np.uint64)
        own.append((number, keys, rng.normal(size=(keys.size, 25)).astype(np.float32)))
    want = state.copy()
    for number, keys, deltas in own:
        at = np.minimum(np.searchsorted(keys, slots), keys.size - 1)
        hit = (keys[at] == slots) & (applied < number)
        want[hit] = want[hit] + deltas[at[hit]]
    got = state.copy()
    for number, keys, deltas in own:
        kernel().patch_rows(slots, got, applied, keys, deltas, number)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert not np.array_equal(got, state)


def test_store_pull_push_and_refusals_change_nothing():
    s = spec(shards=2)
    store = DeepModelShard(s.model("d"), 1, 2, max_delta=10.0)
    lay = store.layout
    dense_mine = lay.dense_keys()[lay.dense_keys() % np.uint64(2) == np.uint64(1)]
    state = store.pull(dense_mine)
    assert state.shape == (dense_mine.size, 25)
    initial = lay.rows_of_dense(lay.initial_dense())
    np.testing.assert_array_equal(state[:, :8], initial[1::2])  # dense rows start initialised
    keys = np.concatenate([np.array([1, 3, 1023], np.uint64), dense_mine])
    assert not store.pull(keys[:3]).any()
    deltas = np.ones((keys.size, 25), np.float32)
    before = {k: v.copy() for k, v in store.state.items()}
    for bad, words in [(deltas[:, :24], "needs"), (deltas * 11, "max_delta"),
                       (-deltas, "negative")]:
        with pytest.raises(InvalidValue, match=words):
            store.push(keys, bad)
    with pytest.raises(InvalidValue, match="outside deep model"):
        store.pull(np.array([lay.total_keys + 1], np.uint64))
    with pytest.raises(InvalidValue, match="not owned"):
        store.pull(np.array([2], np.uint64))
    for k, v in store.state.items():
        np.testing.assert_array_equal(v, before[k])
    store.push(keys, deltas)
    np.testing.assert_array_equal(store.pull(keys), state_after := store.pull(keys))
    assert state_after[0].tolist() == [1.0] * 25
    np.testing.assert_array_equal(store.weights[1023 // 2], np.ones(8, np.float32))
    huge = DeepModelShard(s.model("d"), 1, 2, max_delta=3e38)
    big = np.full((1, 25), 3e38, np.float32)
    huge.push(keys[:1], big)
    with pytest.raises(InvalidValue, match="overflow to inf"):
        huge.push(keys[:1], big)
    np.testing.assert_array_equal(huge.pull(keys[:1]), big)
    with pytest.raises(InvalidValue, match="max_delta"):
        store.push(keys, -11 * deltas)


def test_snapshot_holds_each_part_as_its_own_array():
    """The store keeps rows as one block, but a snapshot holds w, m, v (rows, h0) and t (rows,)
    as four arrays, as releases that kept four arrays wrote them: snapshots load across both."""
    store = DeepModelShard(spec().model("d"), 0, 2)
    keys = np.array([0, 4, 1024], np.uint64)
    deltas = np.arange(3 * 25, dtype=np.float32).reshape(3, 25)
    store.push(keys, deltas)
    arrays = store.snapshot_arrays()
    assert [(k, a.shape, a.flags.c_contiguous) for k, a in arrays.items()] == [
        ("w", (store.size, 8), True), ("m", (store.size, 8), True),
        ("v", (store.size, 8), True), ("t", (store.size,), True)]
    rows = (keys // np.uint64(2)).astype(np.int64)
    pulled = store.pull(keys)
    for j, part in enumerate("wmv"):
        np.testing.assert_array_equal(arrays[part][rows], pulled[:, 8 * j:8 * (j + 1)])
    np.testing.assert_array_equal(arrays["t"][rows], pulled[:, 24])


def test_deep_rows_survive_snapshot_and_log_replay(tmp_path):
    s = spec()
    s.fsync = "always"
    a = ShardState(s, 0, tmp_path)
    rng = np.random.default_rng(4)
    keys = np.array([0, 4, 10, 1024, 1026], np.uint64)
    for i in range(6):
        d = rng.normal(0, 0.1, (keys.size, 25)).astype(np.float32)
        d[:, 16:] = np.abs(d[:, 16:])  # v and t stay >= 0
        a.push("d", keys, d, "w", i + 1, i)
        if i == 2:
            a.snapshot({"d": 3})
    want = {k: v.copy() for k, v in a.stores["d"].state.items()}
    a.close()
    b = ShardState(s, 0, tmp_path)
    report, _ = b.recover()
    assert report.replayed == 3
    for k, v in b.stores["d"].state.items():
        np.testing.assert_array_equal(v, want[k])
    b.close()
    other = load_spec(text=SPEC.replace("[8, 4, 3]", "[6, 4, 3]"))
    other.shards = 2
    c = ShardState(other, 0, tmp_path)
    with pytest.raises(ConfigError, match="another shape"):
        c.recover()
    c.close()


def test_linear_nodes_never_import_tensorflow():
    code = ("import sys, ps.shard, serving.replica, worker.trainer, deploy.cli, common.deep, "
            "serving.deep_model, ps.deep_store; "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_flat_call_gives_the_public_calls_outputs_and_falls_back_to_it():
    """The learner's step is called through TensorFlow's AtomicFunction on EagerTensors
    (`worker.models.tf_call`); the outputs are the public call's, and a function object
    without those internals is called the public way."""
    from worker.models.tf_call import flat_call

    concrete = tf.function(lambda a, b: (a * 2.0, tf.reduce_sum(b)), input_signature=[
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([2, None], tf.int64)],
    ).get_concrete_function()
    a = np.array([1.5, -2.0, 3.0], np.float32)
    b = np.arange(6, dtype=np.int64).reshape(2, 3)
    want = [t.numpy() for t in concrete(tf.constant(a), tf.constant(b))]

    class Public:  # a concrete function as a TensorFlow without the internals would give it
        structured_input_signature = concrete.structured_input_signature

        def __call__(self, *args):
            return concrete(*args)

    for call in (flat_call(concrete), flat_call(Public())):
        got = [t.numpy() for t in call(a, b)]
        assert len(got) == 2
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1] == 15
