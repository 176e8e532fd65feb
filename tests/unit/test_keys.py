import numpy as np
import pytest

import worker.keys as keys_module
from common.sharding import slots_of
from worker.keys import KeyIndexer
from worker.models.prebuilt import Kernel


@pytest.mark.parametrize("compiled", ["prebuilt", "jit"])
def test_indexer_equals_numpy_unique_batch_after_batch(compiled, monkeypatch):
    """The slot bitmap is reused: every batch must still match np.unique exactly, with the
    kernel's build and with numba's JIT."""
    if compiled == "jit":
        jit = Kernel()
        monkeypatch.setattr(keys_module, "kernel", lambda: jit)
    rng = np.random.default_rng(3)
    for bits in (4, 6, 12, 22, 24):
        indexer = KeyIndexer(bits)
        for size in (0, 1, 7, 5000, 40000):
            ids = rng.integers(0, 2**63, size, dtype=np.uint64)
            ids[: size // 3] = ids[size // 3: 2 * (size // 3)]  # plenty of repeats
            keys = indexer.index(ids)
            uniq, inverse = np.unique(slots_of(ids, bits), return_inverse=True)
            assert keys.slots.dtype == np.uint64
            assert keys.slots.tolist() == uniq.tolist()
            assert keys.inverse.tolist() == inverse.ravel().tolist()
            if indexer._bitmap is not None:  # left clear for the next batch
                assert not indexer._bitmap.any()


def test_indexer_beyond_the_dense_bitmap_uses_a_sort():
    ids = np.array([5, 2**40 + 5, 5, 7], np.uint64)
    keys = KeyIndexer(30).index(ids)
    assert keys.slots.tolist() == [5, 7] and keys.inverse.tolist() == [0, 0, 0, 1]
