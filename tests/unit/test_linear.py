"""common.linear: per-instance sums of instances in CSR form equal, bit for bit, the
sequential sums `margins` takes over the same entries laid out with rows."""
from __future__ import annotations

import numpy as np
import pytest

from common.features import Features
from common.linear import instance_margins, margins


def csr_case(rng, lengths, weights):
    """(offsets, weights, the same instances as Features with rows) for instance `lengths`."""
    lengths = np.asarray(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    return offsets, weights(rng, int(offsets[-1])), Features(lengths.size, rows,
                                                             np.zeros(rows.size, np.uint64))


def sequential(offsets, w) -> np.ndarray:
    """The reference: each instance's weights added one by one from 0.0, in float64."""
    out = np.zeros(offsets.size - 1)
    for i in range(offsets.size - 1):
        total = 0.0
        for x in w[offsets[i]:offsets[i + 1]]:
            total += float(x)
        out[i] = total
    return out


LEARNED = lambda rng, k: rng.normal(0.0, 0.3, k).astype(np.float32)  # noqa: E731
# magnitudes from 1e-9 to 1e9 within one instance: summation order changes the float64 result
WIDE = lambda rng, k: (rng.standard_normal(k) * 10.0 ** rng.integers(-9, 9, k)).astype(  # noqa
    np.float32)
SPARSE = lambda rng, k: np.where(rng.random(k) < 0.7, 0.0, LEARNED(rng, k)).astype(  # noqa
    np.float32)


@pytest.mark.parametrize("weights", [LEARNED, WIDE, SPARSE], ids=["learned", "wide", "sparse"])
def test_csr_sums_equal_the_sequential_sums_bit_for_bit(weights):
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 60, 500)
    lengths[[0, 17, -2, -1]] = 0  # empty instances first, inside and last
    offsets, w, features = csr_case(rng, lengths, weights)
    size = np.abs(w)
    within_bound = lengths.max() * size.max() <= 2.0 ** 29 * size[size > 0].min()
    assert within_bound == (weights is not WIDE)  # which branch of instance_margins runs
    expected = sequential(offsets, w)
    np.testing.assert_array_equal(margins(features, w), expected)
    np.testing.assert_array_equal(instance_margins(offsets, w), expected)


def test_wide_weights_would_differ_if_summed_pairwise():
    """The WIDE case really exercises the fallback: a pairwise sum differs there."""
    rng = np.random.default_rng(7)
    offsets, w, _ = csr_case(rng, np.full(200, 40), WIDE)
    pairwise = np.add.reduceat(w, offsets[:-1], dtype=np.float64)
    assert not np.array_equal(pairwise, sequential(offsets, w))
    np.testing.assert_array_equal(instance_margins(offsets, w), sequential(offsets, w))


@pytest.mark.parametrize("lengths", [[], [0], [0, 0, 0], [3], [0, 2, 0]])
def test_edge_shapes(lengths):
    rng = np.random.default_rng(1)
    offsets, w, _ = csr_case(rng, lengths, LEARNED)
    np.testing.assert_array_equal(instance_margins(offsets, w), sequential(offsets, w))
    zeros = np.zeros_like(w)
    np.testing.assert_array_equal(instance_margins(offsets, zeros), np.zeros(len(lengths)))


def test_float64_weights_are_summed_sequentially():
    rng = np.random.default_rng(3)
    offsets, w, _ = csr_case(rng, rng.integers(1, 40, 300), WIDE)
    w64 = w.astype(np.float64) * (1 + 1e-12)  # no longer float32 values: no exactness bound
    np.testing.assert_array_equal(instance_margins(offsets, w64), sequential(offsets, w64))
