"""A shard's store, alone and with its coalescer: which keys it takes, what pulls and pushes see
in its row layout, and that a publish window sends exactly the weights the store holds,
however many pushes it coalesced, for every optimizer."""
from __future__ import annotations

import numpy as np
import pytest

from common.config import load_spec
from common.optim import LAYOUTS
from ps.publisher import Coalescer
from ps.store import ModelShard

SPEC = "[models.m]\nbits = 10\n[models.m.optimizer]\nname = '{}'"


def store_of(optimizer: str, shard: int = 1, shards: int = 2) -> ModelShard:
    spec = load_spec(text=SPEC.format(optimizer))
    return ModelShard(spec.models["m"], shard, shards)


def push_of(store: ModelShard, rng, n: int = 60):
    keys = np.unique(rng.integers(0, 1 << 9, n)).astype(np.uint64) * 2 + 1
    deltas = rng.normal(0, 1, (keys.size, len(store.columns))).astype(np.float32)
    deltas[:, store.optimizer.nonneg_index()] **= 2  # sums of squares, step counts stay >= 0
    return keys, deltas


@pytest.mark.parametrize("optimizer", list(LAYOUTS))
def test_a_window_publishes_the_weights_the_store_holds(optimizer):
    rng = np.random.default_rng(4)
    store = store_of(optimizer)
    coalescer = Coalescer(1, 7, {"m": store})
    for pushes in (1, 3):  # one push: its checked weights; several: read back, merged
        for _ in range(pushes):
            checked = store.check_push(*push_of(store, rng))
            store.apply(checked)
            coalescer.mark("m", checked.rows, checked.columns["w"])
        (update,) = coalescer.flush()
        rows = (update.keys // np.uint64(2)).astype(np.int64)
        assert np.all(update.keys % np.uint64(2) == 1) and np.all(np.diff(rows) > 0)
        weights = np.ascontiguousarray(update.values)
        assert weights.tobytes() == store.weights[rows].tobytes()  # bit for bit
        assert weights.tobytes() == store.weights_of(rows).tobytes()


@pytest.mark.parametrize("optimizer", list(LAYOUTS))
def test_pulls_and_columns_show_the_pushed_state(optimizer):
    """The columns side by side in one block: a pull returns them in wire order, `state`
    names each of them, and a push adds to exactly its rows."""
    rng = np.random.default_rng(5)
    store = store_of(optimizer)
    keys, deltas = push_of(store, rng)
    store.push(keys, deltas)
    store.push(keys, deltas)
    pulled = store.pull(keys)
    assert pulled.shape == deltas.shape and pulled.dtype == np.float32
    np.testing.assert_array_equal(pulled, deltas + deltas)
    rows = (keys // np.uint64(2)).astype(np.int64)
    for j, name in enumerate(store.columns):
        np.testing.assert_array_equal(store.state[name][rows], pulled[:, j])
        untouched = np.ones(store.size, bool)
        untouched[rows] = False
        assert not store.state[name][untouched].any()


def test_ftrl_weights_are_computed_from_z_and_n_and_a_snapshot_still_holds_them():
    rng = np.random.default_rng(6)
    store = store_of("ftrl")
    store.push(*push_of(store, rng))
    assert set(store.state) == {"z", "n"} and store.derived == ("w",)
    arrays = store.snapshot_arrays()
    assert list(arrays) == ["w", "z", "n"]  # the arrays and order snapshots have always had
    expected = LAYOUTS["ftrl"].weights(store.state, store.spec.optimizer)
    assert arrays["w"].tobytes() == expected.tobytes() == store.weights.tobytes()


def test_a_refused_push_changes_nothing():
    from common.errors import InvalidValue
    rng = np.random.default_rng(7)
    store = store_of("adagrad")
    keys, deltas = push_of(store, rng)
    store.max_delta = 1e39
    big = np.zeros(deltas.shape, np.float32)
    big[:, 0] = 3e38  # w
    store.push(keys, big)
    before = store.snapshot_arrays()
    negative = deltas.copy()
    negative[-1, 1] = -1e5  # would make g2 negative
    with pytest.raises(InvalidValue, match="g2 of key .* negative"):
        store.push(keys, negative)
    with pytest.raises(InvalidValue, match="make w overflow"):
        store.push(keys, big)
    after = store.snapshot_arrays()
    assert all(after[name].tobytes() == before[name].tobytes() for name in before)


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 6, 8])
def test_each_shard_takes_exactly_the_keys_it_owns(shards):
    """A power of two of shards is told apart by a mask, other counts by a division: both give
    every owned key its row and refuse a key of another shard."""
    from common.errors import InvalidValue
    from common.sharding import local_rows, shard_of
    spec = load_spec(text="[models.m]\nbits = 11").models["m"]
    every = np.arange(1 << 11, dtype=np.uint64)
    for k in range(shards):
        store = ModelShard(spec, k, shards)
        mine = every[shard_of(every, shards) == k]
        np.testing.assert_array_equal(store.rows_for(mine), local_rows(mine, shards))
        for other in every[shard_of(every, shards) != k][:5]:
            with pytest.raises(InvalidValue, match=f"not owned by shard {k} of {shards}"):
                store.rows_for(np.unique(np.append(mine[:3], other)))
