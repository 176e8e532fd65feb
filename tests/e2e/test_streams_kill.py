"""The issue's kill test: a worker process reading a Redis stream, SIGKILLed three times
mid-stream and restarted, learns every event exactly once and ends with the weights of a run
that was never killed. Real shard processes, a real redis-server, `deltaps train` as a user
runs it; the same for a followed file (`--follow`)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest

from tests.integration.helpers import planted_events, shard_weights, stopped_by_sigterm
from tests.integration.streams_helpers import TWO_MODELS, events_learned
from worker.ps_client import PSClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVENTS = int(os.environ.get("DELTAPS_KILL_TEST_EVENTS", 100_000))
KILLS = 3
BATCH = 2000


def worker(c, source: str, model: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.nodes.worker", source, "--cluster", str(c.path),
         "--model", model, "--batch-size", str(BATCH), "--until-empty", "--metrics", "off",
         "--json", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": REPO})


def acknowledged(redis_server, stream: str, group: str) -> int:
    for g in redis_server.client.xinfo_groups(stream):
        if g["name"].decode() == group:
            return int(g["entries-read"] or 0) - int(g["pending"])
    return 0


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


class KilledRun:
    """What every source's kill run does alike: nothing to start beside the worker, the worker
    still alive between kills, and a worker ended as `finish` does."""

    def started(self) -> None:
        pass

    def check_running(self, proc: subprocess.Popen) -> None:
        assert proc.poll() is None, proc.communicate()[1][-3000:]

    def finish(self, proc: subprocess.Popen) -> None:
        finish(proc)


class RedisRun(KilledRun):
    """The killed worker reads a Redis stream; the reference one the same stream as another
    consumer group."""

    def __init__(self, redis_server, events: list[dict]):
        self.redis = redis_server
        redis_server.add_events("ev", events)
        self.reference = (redis_server.url("ev", "ref", "w"),)
        self.run = (redis_server.url("ev", "run", "w"),)

    def done(self) -> float:
        return acknowledged(self.redis, "ev", "run") / EVENTS

    def in_flight(self) -> int:
        return self.redis.client.hlen("ev:journal:run:w")

    def check_all_acknowledged(self) -> None:
        groups = {g["name"].decode(): g for g in self.redis.client.xinfo_groups("ev")}
        assert groups["run"]["pending"] == 0 and groups["run"]["lag"] == 0
        assert groups["run"]["entries-read"] == EVENTS


class FollowRun(KilledRun):
    """The killed worker follows a JSON lines file; the reference one reads it as a file."""

    def __init__(self, directory, events: list[dict]):
        self.path = directory / "events.jsonl"
        self.path.write_text("".join(json.dumps(e) + "\n" for e in events))
        self.reference = (str(self.path),)
        self.run = (str(self.path), "--follow")

    def _sidecar(self) -> dict:
        try:
            return msgpack.unpackb((self.path.parent / "events.jsonl.deltaps").read_bytes(),
                                   strict_map_key=False)
        except FileNotFoundError:
            return {}

    def done(self) -> float:
        return (self._sidecar().get("position") or (0, 0))[1] / self.path.stat().st_size

    def in_flight(self) -> int:
        return len(self._sidecar().get("journal", {}))

    def check_all_acknowledged(self) -> None:
        assert self._sidecar()["position"][1] == self.path.stat().st_size
        assert not self._sidecar()["journal"]


class ZmqRun(FollowRun):
    """The killed worker binds an ingest socket a producer (a thread here) sends every batch
    to, resending what a dead worker left unacknowledged; the reference reads the events from
    a file."""

    def __init__(self, directory, events: list[dict]):
        super().__init__(directory, events)
        from deploy.layout import free_ports
        self.port = free_ports("127.0.0.1", 1)[0]
        self.state = directory / "ingest"
        self.run = (f"zmq://127.0.0.1:{self.port}?state={self.state}",)
        self.events, self.producer, self.error = events, None, None
        self.thread = threading.Thread(target=self._produce, daemon=True)

    def _produce(self) -> None:
        from worker.producer import Producer
        try:
            with Producer(f"tcp://127.0.0.1:{self.port}", "p", timeout_s=1.0) as p:
                self.producer = p
                for i in range(0, len(self.events), BATCH):
                    p.send(self.events[i:i + BATCH])
                p.flush(600)
        except BaseException as exc:
            self.error = exc

    def started(self) -> None:
        if not self.thread.is_alive() and self.producer is None:
            self.thread.start()

    def check_running(self, proc: subprocess.Popen) -> None:
        super().check_running(proc)
        assert self.error is None, f"the producer failed: {self.error!r}"

    def _sidecar(self) -> dict:
        try:
            return msgpack.unpackb((self.state / "ingest.state").read_bytes(),
                                   strict_map_key=False)
        except FileNotFoundError:
            return {}

    def done(self) -> float:
        return self._sidecar().get("acked", {}).get("p", 0) * BATCH / EVENTS

    def finish(self, proc: subprocess.Popen) -> None:
        self.thread.join(600)
        assert self.error is None, self.error
        proc.send_signal(signal.SIGTERM)
        finish(proc)

    def check_all_acknowledged(self) -> None:
        assert self._sidecar()["acked"]["p"] == EVENTS // BATCH
        assert not self._sidecar()["journal"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["redis", "follow", "zmq"])
def test_worker_sigkilled_three_times_learns_each_event_once(local_cluster, tmp_path, kind,
                                                             request):
    c = local_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    events = planted_events(EVENTS, seed=11)
    run = (RedisRun(request.getfixturevalue("redis_server"), events) if kind == "redis"
           else FollowRun(tmp_path, events) if kind == "follow" else ZmqRun(tmp_path, events))
    finish(worker(c, *run.reference[:1], "ref", *run.reference[1:]))

    kills = in_flight = 0
    for k in range(1, KILLS + 1):
        proc = worker(c, run.run[0], "run", *run.run[1:])
        run.started()
        try:
            while run.done() < k / (KILLS + 1):
                run.check_running(proc)
                time.sleep(0.01)
            while not run.in_flight():  # kill with a push on its way
                run.check_running(proc)
            proc.send_signal(signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
            in_flight += run.in_flight()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert kills == KILLS
    assert in_flight  # at least one kill left a push that the restart had to send again
    assert run.done() < 1  # the last kill was mid-stream
    run.finish(worker(c, run.run[0], "run", *run.run[1:]))

    run.check_all_acknowledged()
    assert events_learned(c, "run") == events_learned(c, "ref") == EVENTS
    client = PSClient(c.cluster.shards())
    try:
        np.testing.assert_allclose(shard_weights(client, "run", 14),
                                   shard_weights(client, "ref", 14), rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def test_sigterm_ends_a_stream_worker_after_its_batches_are_learned(local_cluster, redis_server):
    """SIGTERM mid-stream: the worker learns and acknowledges what it read, leaves nothing
    pending or journaled, and what the shards counted is exactly what was acknowledged. While
    it ran, /metrics and `deltaps status` showed the group's lag."""
    import urllib.request

    from deploy.workers import worker_rows

    from deploy.layout import free_ports
    c = local_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    events = 40_000
    redis_server.add_events("ev", planted_events(events, seed=2))
    port = free_ports("127.0.0.1", 1)[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.nodes.worker", redis_server.url("ev", "run", "w"),
         "--cluster", str(c.path), "--model", "run", "--batch-size", "500",
         "--metrics", f"127.0.0.1:{port}", "--json"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
        while acknowledged(redis_server, "ev", "run") < events // 4:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.01)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        lag = [line for line in scraped.decode().splitlines()
               if line.startswith("deltaps_worker_source_lag{")]
        assert lag and float(lag[0].split()[-1]) > 0, lag
        shown = worker_rows(c.path)[0]["models"]["run"]  # what `deltaps status` shows
        assert shown["lag"] > 0 and shown["events"] > 0 and "pending" in shown, shown
    finally:
        _, err = stopped_by_sigterm(proc)
    assert proc.returncode == 0, err[-3000:]
    done = acknowledged(redis_server, "ev", "run")
    assert done < events  # it stopped mid-stream
    groups = {g["name"].decode(): g for g in redis_server.client.xinfo_groups("ev")}
    assert groups["run"]["pending"] == 0
    assert redis_server.client.hlen("ev:journal:run:w") == 0
    assert events_learned(c, "run") == done
