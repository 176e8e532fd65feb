"""Reads keep succeeding while serving replicas are SIGKILLed and restarted under live training.

Real processes: 2 shards, 3 replicas. A worker trains continuously (so versions move), a
client reads continuously, and replicas are killed with SIGKILL and restarted one after
another. Every read must succeed (>= 99.99%), carry a version and a staleness, never go back
in version on the same replica, and never answer from weights older than the updates the
shards had acknowledged a few seconds before.
"""
from __future__ import annotations

import bisect
import signal
import threading
import time

import numpy as np

from deploy.admin import node_status
from serving.client import ServingClient
from tests.integration.helpers import (SMALL_SPEC, ListSource, planted_events, score_locally,
                                       shard_weights, wait_replica_caught_up)
from worker.ps_client import PSClient
from worker.trainer import Trainer

READ_S = 20.0  # how long the client reads
KILL_EVERY_S = 2.0
MAX_LAG_S = 3.0  # an answer may not miss updates acknowledged longer ago than this


class PacedSource(ListSource):
    """Events at a modest pace, so training runs the whole test without hogging the CPU."""

    def __init__(self, events, stop: threading.Event, pause_s: float = 0.01):
        super().__init__(events)
        self.stop, self.pause_s = stop, pause_s

    def read(self, max_events):
        if self.stop.is_set():
            return None
        time.sleep(self.pause_s)
        if self.pos >= len(self.events):
            self.pos = 0  # loop over the events until told to stop
        return super().read(max_events)


def test_reads_survive_replicas_killed_and_restarted(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=2, replicas=3).start_all()
    stop = threading.Event()
    acked: list[tuple[float, dict]] = []  # (time, shard seqs acknowledged by then)
    ps = PSClient(c.cluster.shards())
    trainer = Trainer(ps, c.spec, "ctr", batch_size=32)
    source = PacedSource(planted_events(4000), stop)

    def train():
        while not stop.is_set():
            batch = source.read(trainer.batch_size)
            if batch is None:
                break
            trainer.step(batch)
            acked.append((time.monotonic(), dict(trainer.last_seqs)))

    kills: list[int] = []
    killer_errors: list[BaseException] = []

    def killer():
        try:
            r = 0
            while not stop.wait(KILL_EVERY_S):
                c.stop("replica", r, sig=signal.SIGKILL)
                kills.append(r)
                if stop.wait(0.3):
                    break
                c.start("replica", r)
                c.wait_ready(timeout=20.0, role="replica", index=r)
                r = (r + 1) % 3
        except BaseException as exc:  # reported by the test, not lost in the thread
            killer_errors.append(exc)

    trainer_thread = threading.Thread(target=train, daemon=True)
    killer_thread = threading.Thread(target=killer, daemon=True)
    trainer_thread.start()
    while not acked:
        time.sleep(0.01)
    killer_thread.start()

    ok, failed = 0, []
    results = []  # (time sent, replica, version, staleness)
    instances = [e["features"] for e in planted_events(4, seed=9)]
    client = ServingClient([c.address("replica", r) for r in range(3)], timeout=2.0, seed=1)
    deadline = time.monotonic() + READ_S
    try:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                p = client.predict("ctr", instances)
            except Exception as exc:  # counted, and shown if there are too many
                failed.append(repr(exc))
                continue
            ok += 1
            results.append((sent, p.replica, p.version, p.staleness_ms))
            assert p.probabilities.shape == (4,)
    finally:
        stop.set()
        killer_thread.join(30)
        trainer_thread.join(30)
    assert not killer_errors, killer_errors
    total = ok + len(failed)
    assert len(kills) >= 4, kills
    assert total >= 2000, f"only {total} reads in {READ_S}s"
    assert ok / total >= 0.9999, f"{len(failed)} of {total} reads failed: {failed[:5]}"

    # every answer carries a version and a staleness; per replica the version never goes back
    last: dict[str, list[int]] = {}
    times = [t for t, _ in acked]
    by_replica: dict[str, int] = {}
    for sent, replica, version, staleness in results:
        by_replica[replica] = by_replica.get(replica, 0) + 1
        assert len(version) == 2 and all(v >= 0 for v in version)
        assert 0 <= staleness < MAX_LAG_S * 1000, (replica, version, staleness)
        prev = last.get(replica)
        assert prev is None or all(v >= p for v, p in zip(version, prev)), \
            f"{replica} went back from {prev} to {version}"
        last[replica] = version
        # ...and is not older than what the shards had acknowledged MAX_LAG_S before the read
        i = bisect.bisect_right(times, sent - MAX_LAG_S) - 1
        if i >= 0:
            for shard, seq in acked[i][1].items():
                assert version[shard] >= seq, (f"{replica} answered at {version}, but shard "
                                               f"{shard} had acknowledged seq {seq} "
                                               f"{MAX_LAG_S}s before")
    assert len(by_replica) == 3, by_replica

    # after the storm (the killer may have stopped right after a kill: restart that one),
    # every replica answers exactly what the shards' weights give
    for r in range(3):
        if c.procs[("replica", r)].poll() is not None:
            c.start("replica", r)
    c.wait_ready(timeout=20.0)
    weights = shard_weights(ps, "ctr", 16)
    expected = score_locally(c.spec, "ctr", weights, instances)
    for r in range(3):
        wait_replica_caught_up(c.address("replica", r), "ctr", trainer.last_seqs)
        with ServingClient([c.address("replica", r)], timeout=2.0) as one:
            np.testing.assert_array_equal(one.predict("ctr", instances).probabilities, expected)
    restarted = node_status(c.address("replica", kills[-1]), timeout=2.0)
    assert restarted["state"] == "ready"
    client.close()
    ps.close()
