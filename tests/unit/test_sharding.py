import numpy as np

from common.sharding import local_rows, shard_of, shard_size, slots_of, split_by_shard


def test_split_covers_every_key_once_keeps_order_and_routes_by_modulo():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 1 << 20, 5000).astype(np.uint64))
    for n in (1, 2, 3, 4, 7, 8, 20):
        # powers of two take the low bits, the others the remainder: the same shard either way
        np.testing.assert_array_equal(shard_of(keys, n), [int(key) % n for key in keys])
        parts = split_by_shard(keys, n)
        assert len(parts) == n
        joined = np.sort(np.concatenate(parts))
        np.testing.assert_array_equal(joined, np.arange(keys.size))
        for k, idx in enumerate(parts):
            assert np.all(np.diff(keys[idx].astype(np.int64)) > 0)
            assert np.all(shard_of(keys[idx], n) == k)


def test_local_rows_tile_each_shard_exactly():
    bits = 10
    for n in (1, 2, 3, 5):
        slots = np.arange(1 << bits, dtype=np.uint64)
        for k in range(n):
            rows = local_rows(slots[shard_of(slots, n) == k], n)
            np.testing.assert_array_equal(rows, np.arange(shard_size(bits, n, k)))
        assert sum(shard_size(bits, n, k) for k in range(n)) == 1 << bits


def test_slots_take_low_bits():
    ids = np.array([0xFFFF_FFFF_FFFF_FFFF, 0x1234], dtype=np.uint64)
    np.testing.assert_array_equal(slots_of(ids, 8), [0xFF, 0x34])
