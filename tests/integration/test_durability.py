"""No acknowledged update lost, every replica provably equal to the shards: real processes."""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import numpy as np
import pytest

from common.messages import Pull, Push
from common.errors import MissingPush
from common.transport import Channel
from deploy.admin import node_status, verify
from tests.integration.helpers import (SMALL_SPEC, ListSource, planted_events, shard_weights,
                                       wait_replica_caught_up)
from worker.ps_client import PSClient
from worker.trainer import Trainer

EVENTS = planted_events(16000, seed=5)


class WatchedSource(ListSource):
    """A ListSource another thread can wait on, so chaos strikes at given points of the stream
    however fast the machine trains."""

    def __init__(self, events: list[dict]):
        super().__init__(events)
        self.progress = threading.Condition()

    def read(self, max_events: int):
        batch = super().read(max_events)
        with self.progress:
            self.progress.notify_all()
        return batch

    def reached(self, share: float, stop: threading.Event) -> bool:
        """Wait until `share` of the events have been read; False if training ended first."""
        with self.progress:
            self.progress.wait_for(lambda: stop.is_set() or self.pos >= share * len(self.events),
                                   timeout=60)
        return not stop.is_set()


def train_all(c, events, batch=32, during=None, max_delay=0) -> tuple[np.ndarray, Trainer]:
    """Train on `events`; `during(stop, source)` runs in a thread meanwhile."""
    client = PSClient(c.cluster.shards(), retry_s=0.3)
    trainer = Trainer(client, c.spec, "ctr", batch, max_delay=max_delay)
    stop = threading.Event()
    source = WatchedSource(events)
    chaos = threading.Thread(target=during, args=(stop, source)) if during else None
    if chaos:
        chaos.start()
    try:
        trainer.train(source)
    finally:
        stop.set()
        if chaos:
            chaos.join()
    weights = shard_weights(client, "ctr", 16)
    client.close()
    return weights, trainer


def assert_replicas_verified(c, timeout=20.0):
    rows = verify(c.cluster, timeout)
    assert rows and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]


def logged_pushes(c) -> list[int]:
    """Pushes each shard has logged (and applied), over all its restarts: its last lsn."""
    return [node_status(c.address("shard", k))["lsn"] for k in range(c.spec.shards)]


@pytest.mark.parametrize("fsync,max_delay", [("interval", 0), ("always", 0), ("interval", 2)])
def test_kill_9_shards_mid_stream_loses_nothing(local_cluster, fsync, max_delay):
    """Every push is applied exactly once. Exact training (max_delay 0) even learns the very
    weights of an undisturbed run; with bounded delay a pull sent again after a restart may see
    pushes sent after it (never fewer than the delay allows), so only the count is the same."""
    calm = local_cluster(SMALL_SPEC, shards=2, replicas=1, fsync=fsync).start_all()
    expected, calm_trainer = train_all(calm, EVENTS, max_delay=max_delay)
    calm_pushes = logged_pushes(calm)
    calm.stop_all()

    c = local_cluster(SMALL_SPEC, shards=2, replicas=1, fsync=fsync).start_all()
    rng = random.Random(11)
    kills = []

    def chaos(stop: threading.Event, source: WatchedSource):
        for share in (0.2, 0.4, 0.6, 0.8):
            if not source.reached(share, stop) or stop.wait(rng.uniform(0, 0.05)):
                return
            k = rng.randrange(2)
            c.stop("shard", k, signal.SIGKILL)
            kills.append(k)
            c.start("shard", k)

    got, trainer = train_all(c, EVENTS, during=chaos, max_delay=max_delay)
    assert len(kills) >= 2, "the stream ended before the shards were killed"
    assert trainer.client.retries > 0
    assert logged_pushes(c) == calm_pushes
    if max_delay == 0:
        np.testing.assert_array_equal(got, expected)  # bit-identical
    else:
        assert abs(trainer.metrics.logloss - calm_trainer.metrics.logloss) < 0.01
    for k in range(2):
        st = node_status(c.address("shard", k))
        assert st["recovery"]["replayed"] > 0 or k not in kills
    assert_replicas_verified(c)


def test_duplicate_push_is_applied_once_also_across_a_restart(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    keys = np.array([3, 5, 8], np.uint64)
    push = Push("ctr", keys, np.ones((3, 2), np.float32), "worker-a", 1)
    ch = Channel(c.address("shard", 0))
    ch.request(push, 5)
    client = PSClient(c.cluster.shards())
    once = client.pull("ctr", keys)
    ch.request(push, 5)  # the same push again
    np.testing.assert_array_equal(client.pull("ctr", keys), once)
    c.stop("shard", 0, signal.SIGKILL)
    c.start("shard", 0)
    c.wait_ready()
    ch.request(push, 10)  # and once more after the restart
    np.testing.assert_array_equal(client.pull("ctr", keys), once)
    assert node_status(c.address("shard", 0))["duplicates"] == 1  # counted since restart
    ch.request(Push("ctr", keys, np.ones((3, 2), np.float32), "worker-a", 2), 5)
    assert not np.array_equal(client.pull("ctr", keys), once)
    # a pull's reply names the highest push of its worker applied, across the restart too
    assert ch.request(Pull("ctr", keys, "worker-a", 2), 5).applied == 2
    assert ch.request(Pull("ctr", keys, "worker-b"), 5).applied == 0
    ch.close()
    client.close()


def test_sigterm_snapshots_and_restart_replays_nothing(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    before, _ = train_all(c, EVENTS[:2000])
    assert c.stop("shard", 0) == 0
    c.start("shard", 0)
    c.wait_ready()
    st = node_status(c.address("shard", 0))
    assert st["recovery"]["snapshot"] and st["recovery"]["replayed"] == 0
    client = PSClient(c.cluster.shards())
    np.testing.assert_array_equal(shard_weights(client, "ctr", 16), before)
    client.close()


def test_replica_killed_and_restarted_mid_stream_converges(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=2, replicas=2).start_all()
    old_pid = c.procs[("replica", 1)].pid
    chaos_done = []  # (exit code of the killed replica, events read at the kill, at the restart)

    def chaos(stop, source):
        if source.reached(0.3, stop):
            killed_at = source.pos
            code = c.stop("replica", 1, signal.SIGKILL)
            source.reached(0.6, stop)
            c.start("replica", 1)
            chaos_done.append((code, killed_at, source.pos))

    _, trainer = train_all(c, EVENTS[:8000], during=chaos)
    assert chaos_done, "the stream ended before the replica was killed"
    code, killed_at, restarted_at = chaos_done[0]
    assert code == -signal.SIGKILL, f"replica 1 did not die from SIGKILL: exit code {code}"
    assert restarted_at > killed_at, "no training happened while the replica was down"
    c.wait_ready(role="replica", index=1)
    address = c.address("replica", 1)
    status = node_status(address)
    assert status["pid"] == c.procs[("replica", 1)].pid != old_pid, "not a new replica process"
    wait_replica_caught_up(address, "ctr", trainer.last_seqs)
    assert_replicas_verified(c)  # both replicas, the restarted one too, equal the shards


def test_replica_that_missed_updates_notices_and_resyncs(local_cluster):
    spec = SMALL_SPEC.replace("bits = 16", "bits = 20") + "\n[cluster]\npublish_hwm = 2\n"
    c = local_cluster(spec, shards=1, replicas=1).start_all()
    replica = c.procs[("replica", 0)]
    os.kill(replica.pid, signal.SIGSTOP)  # the replica stops reading: the shard drops updates
    try:
        rng = np.random.default_rng(0)
        events = [{"label": int(rng.random() < .3),
                   "features": {f"f{j}": str(v) for j, v in enumerate(rng.integers(0, 10**6, 30))}}
                  for _ in range(40000)]
        client = PSClient(c.cluster.shards())
        Trainer(client, c.spec, "ctr", 4000).train(ListSource(events))
        client.close()
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while True:
        st = node_status(c.address("replica", 0), timeout=2.0)
        if st and st["models"]["ctr"]["gaps"] > 0 and st["models"]["ctr"]["ready"]:
            break
        assert time.monotonic() < deadline, f"replica did not notice and repair the hole: {st}"
        time.sleep(0.05)
    assert_replicas_verified(c)


def test_a_pull_that_overtakes_a_lost_push_is_refused_not_answered(local_cluster):
    """Across a reconnect a push can be lost while the pull queued after it gets through."""
    from common.errors import RemoteError as Refused
    c = local_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    ch = Channel(c.address("shard", 0))
    keys = np.array([2, 4], np.uint64)
    ch.request(Push("ctr", keys, np.ones((2, 2), np.float32), "w", 1), 5)
    assert ch.request(Pull("ctr", keys, "w", 1), 5).values.shape == (2, 2)
    with pytest.raises(Refused, match="follows push 2 of worker w") as refused:
        ch.request(Pull("ctr", keys, "w", 2), 5)  # push 2 never arrived
    assert isinstance(refused.value, MissingPush)
    ch.request(Push("ctr", keys, np.ones((2, 2), np.float32), "w", 2), 5)
    assert ch.request(Pull("ctr", keys, "w", 2), 5).values.shape == (2, 2)
    ch.close()


def test_a_push_that_overtakes_a_lost_push_is_refused_not_applied(local_cluster):
    """With pushes pipelined, push 2 can reach a restarted shard while push 1 died with it."""
    from common.errors import RemoteError as Refused
    c = local_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    ch = Channel(c.address("shard", 0))
    keys = np.array([2, 4], np.uint64)
    with pytest.raises(Refused, match="push 2 follows push 1 of worker w") as refused:
        ch.request(Push("ctr", keys, np.ones((2, 2), np.float32), "w", 2, after=1), 5)
    assert isinstance(refused.value, MissingPush)
    ch.request(Push("ctr", keys, np.ones((2, 2), np.float32), "w", 1, after=0), 5)
    ch.request(Push("ctr", keys, np.ones((2, 2), np.float32), "w", 2, after=1), 5)
    st = node_status(c.address("shard", 0))
    assert st["lsn"] == 2 and st["duplicates"] == 0
    ch.close()
