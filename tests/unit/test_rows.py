"""common.rows: a 2-D float32 array's rows as one element each, gathered and scattered exactly as
the 2-D array's rows would be."""
import numpy as np
import pytest

from common.rows import as_rows, of_rows


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
def test_rows_gather_and_scatter_as_the_arrays_rows_do(width):
    rng = np.random.default_rng(width)
    block = rng.normal(size=(1000, width)).astype(np.float32)
    block[::7, 0] = np.nan  # any bits at all move as they are
    idx = np.unique(rng.integers(0, 1000, 300))
    gathered = of_rows(as_rows(block)[idx], width)
    np.testing.assert_array_equal(gathered.view(np.uint32), block[idx].view(np.uint32))
    out = np.zeros_like(block)
    as_rows(out)[idx] = as_rows(np.ascontiguousarray(gathered))
    want = np.zeros_like(block)
    want[idx] = block[idx]
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
    assert as_rows(block).base is not None  # a view: no copy made
