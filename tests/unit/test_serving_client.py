"""Client-side policies without sockets: adaptive throttling, load spreading and the failover
core (driven here with scripted outcomes, as the clients drive it with channels)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from common.messages import PredictReply
from common.config import ClusterFile, NodeInfo, load_spec
from common.errors import DeltapsError, InvalidInstance, RemoteError, Timeout
from common.features import Features
from common.transport import Unreachable
from serving.client import (AdaptiveThrottle, AsyncServingClient, Balancer, ClientCore, Throttled,
                            ids_message)
from serving.client.core import Connect, Send


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


ADDRESSES = ["tcp://a:1", "tcp://b:2", "tcp://c:3"]


def remote(code):
    return RemoteError(code, f"replica says {code}")


def reply():
    return PredictReply("m", [4, 5], 1.5, np.array([0.25], np.float32))


def read(core, answer, performed):
    """One read through the core, each step answered by `answer(step)` (a return value, or an
    exception to throw in), the way the clients drive it; the steps are appended to
    `performed`."""
    steps = core.failover()
    result, error = None, None
    while True:
        try:
            step = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        performed.append(step)
        try:
            result, error = answer(step), None
        except BaseException as exc:
            result, error = None, exc


def scripted(outcomes, up=None):
    """Answers Connect with `up(candidates)` (default: all connected) and each Send to replica
    k with outcomes[k]: an exception is raised, anything else returned."""
    def answer(step):
        if isinstance(step, Connect):
            return step.candidates if up is None else up(step.candidates)
        outcome = outcomes[step.k]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    return answer


def sends(performed):
    return [s.k for s in performed if isinstance(s, Send)]


def test_core_retries_replica_trouble_on_each_replica_once_then_gives_up():
    core = ClientCore(ADDRESSES, throttle=AdaptiveThrottle(rng=random.Random(0)), seed=1)
    performed = []
    trouble = [remote("not_ready"), Timeout("slow"), Unreachable("gone")]
    with pytest.raises(RemoteError, match="no replica answered") as failed:
        read(core, scripted(trouble), performed)
    assert sorted(sends(performed)) == [0, 1, 2]  # each replica at most once
    assert failed.value.remote_code == "unavailable"  # different troubles
    assert all(str(e) in str(failed.value) for e in trouble)
    assert core.balancer.outstanding == [0, 0, 0] and core.balancer.failures == [1, 1, 1]
    assert core.throttle.counts() == (3, 0)
    # the Connect steps offer only the replicas not tried yet
    connects = [s.candidates for s in performed if isinstance(s, Connect)]
    assert [len(c) for c in connects] == [3, 2, 1]
    with pytest.raises(RemoteError) as same:
        read(ClientCore(ADDRESSES, seed=1), scripted([remote("not_ready")] * 3), [])
    assert same.value.remote_code == "not_ready"  # one trouble everywhere: its code


def test_core_answers_from_the_first_replica_that_replies():
    core = ClientCore(ADDRESSES, throttle=False, seed=2)
    core.balancer.pick = lambda candidates: candidates[0]
    performed = []
    got = read(core, scripted([remote("internal"), reply(), reply()]), performed)
    assert sends(performed) == [0, 1] and got.replica == ADDRESSES[1]
    assert got.probabilities.tolist() == [0.25] and got.version == [4, 5]
    assert got.staleness_ms == 1.5
    assert core.balancer.outstanding == [0, 0, 0] and core.balancer.failures == [1, 0, 0]


def test_core_raises_a_client_mistake_at_once():
    core = ClientCore(ADDRESSES, throttle=AdaptiveThrottle(rng=random.Random(0)), seed=3)
    core.balancer.pick = lambda candidates: candidates[0]
    performed = []
    mistake = remote("invalid_instance")
    with pytest.raises(RemoteError) as raised:
        read(core, scripted([remote("not_ready"), mistake, reply()]), performed)
    assert raised.value is mistake and sends(performed) == [0, 1]
    assert core.throttle.counts() == (2, 1)  # a mistake is an answer: accepted
    assert core.balancer.failures == [1, 0, 0]


def test_core_without_a_connection_gives_up_unreachable_without_sending():
    core = ClientCore(ADDRESSES, connect_timeout=0.25, seed=4)
    performed = []
    with pytest.raises(RemoteError, match="no connection to any of 3 replicas within 0.25s") as e:
        read(core, scripted([reply()] * 3, up=lambda candidates: []), performed)
    assert e.value.remote_code == "unreachable" and sends(performed) == []
    # only replica 2 connected: the read goes there
    got = read(core, scripted([reply()] * 3, up=lambda candidates: [2]), [])
    assert got.replica == ADDRESSES[2]


def test_core_forgets_an_interrupted_attempt_and_throttles_before_any_step():
    core = ClientCore(ADDRESSES, seed=5)
    with pytest.raises(KeyboardInterrupt):
        read(core, scripted([KeyboardInterrupt()] * 3), [])
    assert core.balancer.outstanding == [0, 0, 0] and core.balancer.failures == [0, 0, 0]
    assert core.throttle.counts() == (0, 0)  # no outcome to count
    shut = AdaptiveThrottle(rng=FixedRandom(0.0))
    for _ in range(10):
        shut.record(False)
    performed = []
    with pytest.raises(Throttled, match="0 of 11 recent requests accepted"):
        read(ClientCore(ADDRESSES, throttle=shut), scripted([reply()] * 3), performed)
    assert performed == []


def test_core_needs_replicas_and_either_client_is_made_from_a_cluster_file(tmp_path):
    with pytest.raises(DeltapsError, match="no serving replicas"):
        ClientCore([])
    assert ClientCore(ADDRESSES, timeout=0.5).connect_timeout == 0.5
    assert ClientCore(ADDRESSES).connect_timeout == 1.0
    nodes = [NodeInfo("replica", 1, ADDRESSES[1]), NodeInfo("shard", 0, "tcp://s:9"),
             NodeInfo("replica", 0, ADDRESSES[0])]
    ClusterFile(load_spec(text="[models.m]\nbits = 4"), nodes).save(tmp_path / "cluster.json")
    client = AsyncServingClient.from_cluster_file(tmp_path / "cluster.json", 2.0, seed=1,
                                                  throttle=False, connect_timeout=0.1)
    assert isinstance(client, AsyncServingClient) and client.channels is None  # no socket yet
    assert client.addresses == ADDRESSES[:2] and client.timeout == 2.0
    assert client.throttle is None and client.connect_timeout == 0.1
