import numpy as np

from worker.pacing import PacedSource
from worker.sources import SyntheticStream


def test_paced_source_keeps_every_event_in_order_and_never_exceeds_the_batch():
    plain = SyntheticStream(700, seed=4)
    expected = np.concatenate([b.labels for b in plain.batches(100)])
    paced = PacedSource(SyntheticStream(700, seed=4), events_per_s=20000, prefetch=64)
    got = []
    while (batch := paced.read(50)) is not None:
        got.append(batch.labels)
    np.testing.assert_array_equal(np.concatenate(got), expected)
    assert max(paced.batch_sizes) <= 50 and sum(paced.batch_sizes) == 700
    assert min(paced.batch_sizes) >= 1


def test_a_slow_rate_gives_small_batches():
    paced = PacedSource(SyntheticStream(40, seed=1), events_per_s=400)
    while paced.read(1000) is not None:
        pass
    assert np.mean(paced.batch_sizes) < 10  # never waits to fill a batch of 1000
