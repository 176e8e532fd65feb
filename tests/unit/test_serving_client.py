"""Client-side policies without sockets: adaptive throttling and load spreading."""
from __future__ import annotations

import random

import numpy as np
import pytest

from common.errors import DeltapsError, InvalidInstance
from common.features import Features
from serving.client import AdaptiveThrottle, Balancer, ids_message


class FixedRandom(random.Random):
    """rng.random() always returns `value`."""

    def __init__(self, value: float):
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def throttle(value=0.5, k=2.0, window_s=10.0):
    now = [0.0]
    t = AdaptiveThrottle(k=k, window_s=window_s, clock=lambda: now[0], rng=FixedRandom(value))
    return t, now


def test_throttle_follows_the_sre_formula():
    t, _ = throttle()
    assert t.probability() == 0.0
    for _ in range(10):
        t.record(True)
    assert t.probability() == 0.0 and t.counts() == (10, 10)
    for _ in range(10):  # half the attempts fail: with K = 2 still nothing is shed
        t.record(False)
    assert t.counts() == (20, 10) and t.probability() == 0.0
    for _ in range(5):
        t.record(False)
    assert t.probability() == pytest.approx((25 - 2 * 10) / 26)
    t2, _ = throttle(k=1.0)
    for accepted in [True] * 6 + [False] * 4:
        t2.record(accepted)
    assert t2.probability() == pytest.approx((10 - 6) / 11)


def test_throttle_rejects_with_the_computed_probability_and_counts_rejections():
    t, _ = throttle(value=0.5)
    t.record(False)  # p = 1/2: rng 0.5 is not below it: allowed
    assert t.probability() == pytest.approx(0.5) and t.allow()
    t.record(False)  # p = 2/3: rejected, and the rejection counts as a request
    assert not t.allow() and t.rejected == 1 and t.counts() == (3, 0)
    t_low, _ = throttle(value=0.99)
    for _ in range(50):
        t_low.record(False)
    assert t_low.probability() == pytest.approx(50 / 51) and t_low.allow()  # 0.99 >= 0.980


def test_throttle_rejects_about_the_right_share_over_many_reads():
    rng = random.Random(1)
    rejected = 0
    for _ in range(2000):  # same recent history each time: 20 accepts in 100 attempts
        t = AdaptiveThrottle(clock=lambda: 0.0, rng=rng)
        for accepted in [True] * 20 + [False] * 80:
            t.record(accepted)
        rejected += not t.allow()
    p = (100 - 2 * 20) / 101
    assert abs(rejected / 2000 - p) < 0.04, (rejected, p)


def test_throttle_forgets_outcomes_older_than_the_window():
    t, now = throttle(value=0.0)
    for _ in range(100):
        t.record(False)
    assert t.probability() > 0.9
    now[0] = 5.0
    assert t.probability() > 0.9
    now[0] = 10.5  # the failures' bucket has left the 10 s window
    assert t.probability() == 0.0 and t.counts() == (0, 0) and t.allow()


def test_balancer_spreads_sequential_requests_evenly():
    b = Balancer(3, random.Random(4))
    for _ in range(3000):
        k = b.pick([0, 1, 2])
        b.begin(k)
        b.end(k, True)
    assert all(800 < n < 1200 for n in b.picked), b.picked


def test_balancer_sends_to_the_replica_with_fewer_requests_in_flight():
    b = Balancer(3, random.Random(5))
    b.outstanding = [5, 0, 1]
    picks = [b.pick([0, 1, 2]) for _ in range(600)]
    assert picks.count(0) == 0  # the busiest replica never wins a pair
    assert picks.count(1) > picks.count(2) > 0  # 1 wins every pair it is in


def test_balancer_avoids_a_failed_replica_for_a_growing_back_off():
    now = [0.0]
    b = Balancer(2, random.Random(6), clock=lambda: now[0], backoff_s=0.25, max_backoff_s=1.0)
    b.begin(0)
    b.end(0, False)
    assert {b.pick([0, 1]) for _ in range(50)} == {1}
    assert b.pick([0]) == 0  # the only one left is still tried
    now[0] = 0.3
    b.mark(0, False)  # second failure in a row: 0.5 s
    now[0] = 0.7
    assert {b.pick([0, 1]) for _ in range(50)} == {1}
    now[0] = 0.81
    assert 0 in {b.pick([0, 1]) for _ in range(50)}
    b.mark(0, True)
    assert b.failures[0] == 0 and b.avoid_until[0] == 0.0
    b.mark(1, False)  # back in 0.25 s
    b.mark(0, False)
    b.mark(0, False)  # back in 0.5 s
    assert b.pick([0, 1]) == 1  # both avoided: the one back soonest


def test_ids_message_takes_features_or_arrays():
    f = Features(2, np.array([0, 1]), np.array([7, (5 << 32) + 9], np.uint64))
    msg = ids_message("m", f)
    assert msg.offsets.tolist() == [0, 1, 2] and msg.offsets.dtype == np.int64
    assert msg.ids.tolist() == [7, 9] and msg.ids.dtype == np.uint32  # the low 32 bits
    # (row, id) pairs in any order: sent in CSR form, each instance's ids in their order
    msg = ids_message("m", [2, 0, 2, 0], [1, 2, 3, 4], np.int64(4))
    assert msg.offsets.tolist() == [0, 2, 2, 4, 4] and msg.ids.tolist() == [2, 4, 1, 3]
    with pytest.raises(DeltapsError, match="needs a Features"):
        ids_message("m", [0, 1])
    with pytest.raises(InvalidInstance, match=r"rows must lie in \[0, 2\)"):
        ids_message("m", [0, 2], [1, 2], 2)  # checked before sending
