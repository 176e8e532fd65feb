"""Serving clients against real replicas: spreading, asyncio, pre-hashed ids, cache, throttling.

Most tests share one cluster (2 shards, 3 replicas, prediction cache on), its nodes threads of
this process (`module_inprocess_cluster`); the failover and throttling tests script fake
replicas with the project's own transport, so they decide exactly what each replica answers.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time

import msgpack
import numpy as np
import pytest

from common.messages import ErrorReply, PROTOCOL, PredictReply
from common.errors import InvalidInstance, NotReady, RemoteError
from common.features import Featurizer, columnarize
from common.transport import RequestServer, Unreachable
from deploy.admin import node_status
from serving.client import AdaptiveThrottle, AsyncServingClient, ServingClient, Throttled
from tests.integration.helpers import (SMALL_SPEC, ListSource, planted_events, score_locally,
                                       shard_weights, wait_replica_caught_up)
from tests.rawpeer import RawRouter, raw_exchange
from worker.ps_client import PSClient
from worker.trainer import Trainer

REPLICAS = 3


@pytest.fixture(scope="module")
def cluster(module_inprocess_cluster):
    c = module_inprocess_cluster(SMALL_SPEC, shards=2, replicas=REPLICAS,
                                 prediction_cache_ttl_ms=60_000.0, prediction_cache_entries=100)
    c.start_all()
    ps = PSClient(c.cluster.shards())
    try:
        trainer = Trainer(ps, c.spec, "ctr", batch_size=128)
        trainer.train(ListSource(planted_events(2000)))
        for r in range(REPLICAS):
            wait_replica_caught_up(c.address("replica", r), "ctr", trainer.last_seqs)
        yield c, ps, trainer
    finally:
        ps.close()


def addresses(c) -> list[str]:
    return [c.address("replica", r) for r in range(REPLICAS)]


def served(c) -> list[int]:
    return [node_status(a, 2.0)["predict"]["served"] for a in addresses(c)]


def test_sync_reads_are_spread_over_every_replica(cluster):
    c, _, _ = cluster
    before = served(c)
    seen = {}
    with ServingClient(addresses(c), seed=5) as client:
        for i in range(300):
            p = client.predict("ctr", [{"user": f"u{i}"}])
            seen[p.replica] = seen.get(p.replica, 0) + 1
    assert sum(seen.values()) == 300 and len(seen) == REPLICAS
    assert min(seen.values()) >= 60, seen  # uniform would be 100 each
    # ...and the replicas' own counters agree (>=: these ports are open to the machine)
    counts = [a - b for a, b in zip(served(c), before)]
    assert all(n >= seen[a] for n, a in zip(counts, addresses(c))), (counts, seen)


def test_async_client_spreads_concurrent_reads_and_answers_like_the_sync_one(cluster):
    c, _, _ = cluster
    instances = [[e["features"]] for e in planted_events(120, seed=4)]
    before = served(c)

    async def main():
        async with AsyncServingClient(addresses(c), seed=6) as client:
            results = []
            for start in range(0, len(instances), 30):  # 30 reads in flight at a time
                results += await asyncio.gather(*[client.predict("ctr", inst)
                                                  for inst in instances[start:start + 30]])
            return results

    results = asyncio.run(main())
    seen = {a: sum(r.replica == a for r in results) for a in addresses(c)}
    assert min(seen.values()) >= 20, seen
    counts = [a - b for a, b in zip(served(c), before)]
    assert all(n >= seen[a] for n, a in zip(counts, addresses(c))), (counts, seen)
    with ServingClient(addresses(c)) as client:
        for inst, got in zip(instances, results):
            want = client.predict("ctr", inst)
            np.testing.assert_array_equal(got.probabilities, want.probabilities)
            assert got.version == want.version and got.staleness_ms >= 0


def test_both_clients_are_made_from_the_cluster_file(cluster):
    c, _, _ = cluster
    instances = [{"user": "u1", "item": "i2"}]
    with ServingClient.from_cluster_file(c.path, timeout=2.0) as client:
        assert client.addresses == addresses(c)
        want = client.predict("ctr", instances)

    async def main():
        async with AsyncServingClient.from_cluster_file(c.path, timeout=2.0) as client:
            return await client.predict("ctr", instances)
    got = asyncio.run(main())
    np.testing.assert_array_equal(got.probabilities, want.probabilities)
    assert got.version == want.version


def test_prehashed_ids_score_exactly_like_the_feature_dicts(cluster):
    c, _, _ = cluster
    instances = [e["features"] for e in planted_events(200, seed=8)] + [{}]
    features = Featurizer(c.spec.feature_spec("ctr")).featurize(
        columnarize(instances, with_labels=False))
    with ServingClient(addresses(c)[:1]) as client:
        by_dicts = client.predict("ctr", instances)
        by_ids = client.predict_ids("ctr", features)
        by_arrays = client.predict_ids("ctr", features.rows, features.ids, features.n)
    assert len(set(by_dicts.probabilities.tolist())) > 10
    np.testing.assert_array_equal(by_ids.probabilities, by_dicts.probabilities)
    np.testing.assert_array_equal(by_arrays.probabilities, by_dicts.probabilities)
    assert by_ids.version == by_dicts.version

    async def main():
        async with AsyncServingClient(addresses(c)) as client:
            return await client.predict_ids("ctr", features)
    np.testing.assert_array_equal(asyncio.run(main()).probabilities, by_dicts.probabilities)


@pytest.mark.parametrize("n, rows, ids, text", [
    (2, [0, 2], [1, 2], r"rows must lie in \[0, 2\)"),
    (2, [0, 1, 1], [1, 2], "rows has 3 entries but ids has 2"),
    (1 << 40, [0], [1], "outside"),
])
def test_bad_prehashed_pairs_are_refused_before_sending(cluster, n, rows, ids, text):
    c, _, _ = cluster
    with ServingClient(addresses(c)) as client:
        with pytest.raises(InvalidInstance, match=text):
            client.predict_ids("ctr", np.array(rows, np.int64), np.array(ids, np.uint64), n)
        ok = client.predict_ids("ctr", np.array([0]), np.array([1], np.uint64), 1)
        assert ok.probabilities.shape == (1,)


def raw_predict_ids(offsets=b"", ids=b"", offsets_spec=("<i8", [3]), ids_spec=("<u4", [2]),
                    **fields):
    """Frames of a predict_ids request built by hand (header + one frame per array)."""
    header = {"op": "predict_ids", "v": PROTOCOL, "rid": 1, "model": "ctr",
              "arrays": [list(offsets_spec), list(ids_spec)], **fields}
    return [msgpack.packb(header, use_bin_type=True), offsets, ids]


OFFSETS = np.array([0, 1, 2], np.int64).tobytes()
IDS = np.array([5, 6], np.uint32).tobytes()


@pytest.mark.parametrize("frames, text", [
    (raw_predict_ids(np.array([0, 1, 2], np.int32).tobytes(), IDS), "needs 24"),
    (raw_predict_ids(OFFSETS, IDS, ("<i8", [3, 1]), ("<u4", [2, 1])), "must be 1-D"),
    (raw_predict_ids(OFFSETS, IDS, ids_spec=("<f8", [2])), "must be <u4"),
    (raw_predict_ids(np.array([0, 2, 1], np.int64).tobytes(), IDS), "end at len"),
    (raw_predict_ids(np.array([0, 2, 1, 2], np.int64).tobytes(), IDS, ("<i8", [4])),
     "never decrease: instance 1"),
    (raw_predict_ids(OFFSETS, IDS, model=7), "'model' must be str"),
    (raw_predict_ids(OFFSETS, IDS), None),  # the well-formed one is answered
])
def test_prehashed_requests_with_wrong_dtypes_or_shapes_get_error_replies(cluster, frames, text):
    c, _, _ = cluster
    reply = raw_exchange(c.address("replica", 0), frames, 5.0)
    if text is None:
        assert isinstance(reply, PredictReply) and reply.probabilities.shape == (2,)
    else:
        assert isinstance(reply, ErrorReply) and text in reply.message, reply


def test_prediction_cache_hits_repeats_and_misses_after_a_new_version(cluster):
    c, ps, trainer = cluster
    address = c.address("replica", 1)
    instances = [{"user": "u3", "item": "i4"}, {"user": "u7"}]
    reordered = [{"item": "i4", "user": "u3"}, {"user": "u7"}]  # same request, fields reordered

    def cache():
        return node_status(address, 2.0)["cache"]

    # earlier tests' updates still arriving would change the version between two reads
    wait_replica_caught_up(address, "ctr", trainer.last_seqs)
    with ServingClient([address]) as client:
        first = client.predict("ctr", instances)
        before = cache()
        again = client.predict("ctr", reordered)
        hit = cache()
        assert hit["enabled"] and hit["hits"] == before["hits"] + 1
        np.testing.assert_array_equal(again.probabilities, first.probabilities)
        assert again.version == first.version

        trainer.train(ListSource(planted_events(500, seed=5)))  # a new model version
        wait_replica_caught_up(address, "ctr", trainer.last_seqs)
        fresh = client.predict("ctr", instances)
        after = cache()
        assert after["hits"] == hit["hits"] and after["misses"] == hit["misses"] + 1
        assert fresh.version != first.version
        expected = score_locally(c.spec, "ctr", shard_weights(ps, "ctr", 16), instances)
        np.testing.assert_array_equal(fresh.probabilities, expected)
        assert not np.array_equal(fresh.probabilities, first.probabilities)
        assert 0 < after["hit_rate"] < 1


class FakeReplica:
    """A replica played by the test: answers predicts with `self.answer(msg)`; with `answer`
    None, a hung replica that reads requests and never answers."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = 0
        self.stop = threading.Event()
        if answer is None:
            self.server = RawRouter()
        else:
            self.server = RequestServer("tcp://127.0.0.1:0", {"predict": self._predict}, 1 << 20)
        self.address = self.server.address
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _predict(self, msg):
        self.calls += 1
        return self.answer(msg)

    def _run(self):
        while not self.stop.is_set():
            if self.server.poll(0.02):
                if self.answer is None:  # a hung replica: reads requests, never answers
                    self.calls += 1
                    self.server.recv()
                else:
                    self.server.handle_ready()
        self.server.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)


def ok_reply(msg):
    return PredictReply(msg.model, [1, 1], 0.0, np.full(len(msg.instances), 0.25, np.float32))


def refuse(code, text):
    def answer(_msg):
        from common.errors import DeltapsError
        err = DeltapsError(text)
        err.code = code
        raise err
    return answer


def test_failover_retries_replica_trouble_but_not_client_mistakes():
    not_ready = FakeReplica(refuse("not_ready", "model 'ctr' is not ready"))
    good = FakeReplica(ok_reply)
    try:
        with ServingClient([not_ready.address, good.address], timeout=2.0, seed=0) as client:
            for _ in range(20):
                assert client.predict("ctr", [{}]).replica == good.address
            assert good.calls == 20
            # after failing once, the not-ready replica is avoided for a back-off
            assert 1 <= not_ready.calls <= 3
        mistake = FakeReplica(refuse("invalid_instance", "instance 0: bad"))
        with ServingClient([mistake.address, good.address], timeout=2.0, seed=0) as client:
            before = good.calls
            while mistake.calls == 0:
                try:
                    client.predict("ctr", [{}])
                except RemoteError as exc:
                    assert isinstance(exc, InvalidInstance)
            assert good.calls - before < 20  # only the reads that went to `good` first
            with pytest.raises(RemoteError, match="instance 0: bad"):
                for _ in range(50):
                    client.predict("ctr", [{}])
        mistake.close()
    finally:
        not_ready.close()
        good.close()


def test_dead_replica_is_skipped_and_a_lost_connection_fails_over_at_once():
    good = FakeReplica(ok_reply)
    hung = [FakeReplica(None), FakeReplica(None)]
    dead = "tcp://127.0.0.1:1"  # nothing listens there
    try:
        with ServingClient([dead, good.address], timeout=5.0, seed=2) as client:
            for _ in range(10):
                assert client.predict("ctr", [{}]).replica == good.address
        # a read stuck on a replica that dies fails at once, not after the 5 s timeout: the
        # client notices the connection drop...
        with ServingClient([hung[0].address], timeout=5.0) as client:
            threading.Timer(0.3, hung[0].close).start()
            t0 = time.monotonic()
            with pytest.raises(RemoteError, match="dropped while waiting") as lost:
                client.predict("ctr", [{}])
            assert isinstance(lost.value, Unreachable) and time.monotonic() - t0 < 2.0
        # ...and with another replica to go to, the read succeeds there
        with ServingClient([hung[1].address, good.address], timeout=5.0) as client:
            client.balancer.pick = lambda candidates: candidates[0]  # the hung one first
            threading.Timer(0.3, hung[1].close).start()
            t0 = time.monotonic()
            assert client.predict("ctr", [{}]).replica == good.address
            assert hung[1].calls == 1 and time.monotonic() - t0 < 2.0
    finally:
        good.close()
        for h in hung:
            h.close()


def test_a_cancelled_async_read_no_longer_counts_as_in_flight():
    hung = FakeReplica(None)
    try:
        async def main():
            async with AsyncServingClient([hung.address], timeout=5.0) as client:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.predict("ctr", [{}]), 1.0)
                return client.balancer.outstanding, client.balancer.failures
        assert asyncio.run(main()) == ([0], [0])  # not a failure of the replica either
        deadline = time.monotonic() + 2.0
        while hung.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hung.calls == 1  # it was cancelled while waiting for the reply
    finally:
        hung.close()


def test_throttling_sheds_reads_while_replicas_fail_and_recovers():
    state = {"ok": False}
    fake = FakeReplica(lambda msg: ok_reply(msg) if state["ok"]
                       else refuse("not_ready", "not ready")(msg))
    now = [0.0]
    throttle = AdaptiveThrottle(k=2.0, window_s=10.0, clock=lambda: now[0], rng=random.Random(11))
    try:
        with ServingClient([fake.address], timeout=2.0, throttle=throttle) as client:
            outcomes = []
            for _ in range(200):
                try:
                    client.predict("ctr", [{}])
                    outcomes.append("ok")
                except Throttled:
                    outcomes.append("throttled")
                except RemoteError as exc:
                    assert isinstance(exc, NotReady)
                    outcomes.append("failed")
            assert outcomes[0] == "failed"
            assert "ok" not in outcomes
            # shedding grows as failures accumulate: most late reads never leave the client
            assert outcomes[-100:].count("throttled") > 80
            assert fake.calls == outcomes.count("failed") < 60
            assert client.throttle.probability() > 0.8

            # the replica recovers: the reads let through succeed, and as the failures age out
            # of the 10 s window the share let through doubles window after window (locally
            # rejected reads count as requests too, as in the SRE book)
            state["ok"] = True
            per_step = []
            for _ in range(120):  # 60 s of reads at 40 reads/s
                now[0] += 0.5
                passed = 0
                for _ in range(20):
                    try:
                        client.predict("ctr", [{}])
                        passed += 1
                    except Throttled:
                        pass
                per_step.append(passed)
            assert sum(per_step[:10]) < 20  # still shedding right after the recovery
            assert sum(per_step[20:40]) > sum(per_step[:20])
            assert per_step[80:] == [20] * 40  # within 40 s nothing is shed any more
            assert client.throttle.probability() == 0.0
    finally:
        fake.close()
