import numpy as np
import pytest

from common.unique import sorted_unique


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int32, np.int8])
def test_sorted_unique_matches_np_unique(dtype):
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 7, 5000):
        values = rng.integers(0, 100, size).astype(dtype)
        got = sorted_unique(values)
        assert got.dtype == values.dtype
        assert np.array_equal(got, np.unique(values))


def test_sorted_unique_merges_sorted_parts_and_leaves_its_input_alone():
    parts = [np.array([1, 4, 9]), np.array([0, 4, 10]), np.array([9])]
    merged = np.concatenate(parts)
    assert sorted_unique(merged).tolist() == [0, 1, 4, 9, 10]
    assert merged.tolist() == [1, 4, 9, 0, 4, 10, 9]
