"""Across real network interfaces: every node in its own network namespace (tests/netlab.py).

- **Slow links**: the worker reaches the shards through a delaying TCP relay (the kernel here
  has no netem) that adds 0, 2 or 10 ms one way (twice that per round trip), and a direct run
  for the relay's own cost. Throughput is `deltaps train` on the planted stream at batch 4096
  and 512, and at 512 with `--max-delay 1` (the next batch's pull sent ahead); freshness is
  the time from a push sent through the relay to its sequence number being readable on the
  replica (reached directly).
- **Partition**: a shard is cut off (the bridge drops its frames) for 30 s while a worker
  trains: how long after the heal the shards apply pushes again, and the worker's RSS at the
  cut, while blocked and over the run.

Needs root, iproute2 and nftables; otherwise the section is skipped with the reason.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from bench.report import HIGHER, LOWER, figure

DELAYS_MS = (0.0, 2.0, 10.0)
RELAY_BASE = 15000  # the worker's relay listens on 127.0.0.1:RELAY_BASE + 2k for shard k
SLOT = np.array([6], np.uint64)  # one slot of shard 0
HOSTS = ["shard0", "shard1", "rep0", "worker", "admin"]


def probe(worker_cluster: str, replica: str, samples: int) -> dict:
    """In the worker's namespace: push a tiny change to one slot of shard 0 and time until the
    replica answers with a version that includes it; push -> readable, in ms."""
    from common.config import ClusterFile
    from common.messages import Predict
    from common.transport import Channel
    from worker.ps_client import PSClient
    client = PSClient(ClusterFile.load(worker_cluster).shards())
    ch = Channel(replica)
    out = []
    try:
        for _ in range(samples):
            before = ch.request(Predict("ctr", [{}]), 5.0).version[0]
            sent = time.perf_counter()
            pending = client.push_async("ctr", SLOT, np.array([[1e-6, 0.0]], np.float32))
            while ch.request(Predict("ctr", [{}]), 5.0).version[0] <= before:
                pass
            out.append((time.perf_counter() - sent) * 1000.0)
            pending.wait()
            time.sleep(0.01)
    finally:
        ch.close()
        client.close()
    ms = np.array(out)
    return {"p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3)}


def _worker_cluster(net, delayed: bool) -> str:
    """The lab's cluster file as the worker sees it: shards through its relay, or direct."""
    from common.config import ClusterFile
    cluster = ClusterFile.load(net.cluster_file)
    if delayed:
        for n in cluster.shards():
            n.address = f"tcp://127.0.0.1:{RELAY_BASE + 2 * n.index}"
    path = net.dir / f"worker-{'relay' if delayed else 'direct'}.json"
    cluster.save(path)
    return str(path)


def _train(net, cluster_file: str, events: int, batch: int, max_delay: int) -> float:
    done = net.run("worker", [sys.executable, "-m", "deploy.cli", "train",
                              f"synthetic:{events}:3", "--json", "--batch-size", str(batch),
                              "--max-delay", str(max_delay), "--cluster", cluster_file],
                   timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"deltaps train failed: {done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])["events_per_s"]


# (column, batch size, max delay): at batch 4096 a round trip is small beside the batch's
# compute; at 512 it is not, and --max-delay 1 is what hides it
RUNS = (("b4096", 4096, 0), ("b512", 512, 0), ("b512_max_delay1", 512, 1))


def _links(ctx, net) -> tuple[list, list]:
    """Best of `rounds` runs per setting (the settings alternate, so the machine's other load
    spreads over all of them), and one freshness probe per setting."""
    from tests import netlab
    events = 100_000 if ctx.quick else 200_000
    samples = 50 if ctx.quick else 200
    rounds = 1 if ctx.quick else 2
    replica = f"tcp://{net.addr['rep0']}:{netlab.REPLICA_PORT}"
    settings = [("direct", None)] + [(f"{d:g} ms", d) for d in DELAYS_MS]
    best: dict[tuple[str, str], float] = {}
    fresh: dict[str, dict] = {}
    for r in range(rounds):
        for name, delay in settings:
            relay = None
            if delay is not None:
                pairs = [(f"127.0.0.1:{RELAY_BASE + 2 * k}",
                          f"{net.addr[h]}:{netlab.SHARD_PORT}")
                         for k, h in enumerate(("shard0", "shard1"))]
                relay = net.relay("worker", pairs, delay)
            try:
                cluster_file = _worker_cluster(net, delay is not None)
                for col, batch, ahead in RUNS:
                    rate = _train(net, cluster_file, events, batch, ahead)
                    best[(name, col)] = max(best.get((name, col), 0.0), rate)
                if r == 0:
                    done = net.run("worker", [sys.executable, "-m", "bench.network",
                                              cluster_file, replica, str(samples)], timeout=600)
                    if done.returncode != 0:
                        raise RuntimeError(f"freshness probe failed: {done.stdout}{done.stderr}")
                    fresh[name] = json.loads(done.stdout.strip().splitlines()[-1])
            finally:
                if relay is not None:
                    relay.terminate()
                    relay.wait(10)
            ctx.log(f"  round {r + 1}, {name}: "
                    + ", ".join(f"{col} {best[(name, col)]:,.0f} ev/s" for col, _, _ in RUNS)
                    + f"; push -> readable p50 {fresh[name]['p50']} ms, p99 "
                      f"{fresh[name]['p99']} ms")
    rows, figures = [], []
    for name, _ in settings:
        rows.append([name, *(round(best[(name, col)]) for col, _, _ in RUNS),
                     fresh[name]["p50"], fresh[name]["p99"]])
        key = name.replace(" ", "").replace(".", "_")
        for col, batch, ahead in RUNS:
            config = {"one_way_delay": name, "batch_size": batch, "max_delay": ahead,
                      "events": events, "best_of": rounds, "shards": 2, "replicas": 1}
            figures.append(figure(f"network_{key}_{col}_events_per_s", best[(name, col)],
                                  "events/s", HIGHER, config))
        config = {"one_way_delay": name, "samples": samples}
        figures += [figure(f"network_{key}_freshness_p50_ms", fresh[name]["p50"], "ms", LOWER,
                           config),
                    figure(f"network_{key}_freshness_p99_ms", fresh[name]["p99"], "ms", LOWER,
                           config)]
    return rows, figures


def _partition(ctx, net) -> dict:
    from tests import netlab
    cut_s = 30.0
    watch = netlab.PushWatch(net, "admin")
    worker = net.python("worker", "-m", "deploy.cli", "train", "synthetic:100000000:3",
                        "--batch-size", "4096", "--cluster", str(net.cluster_file),
                        log=net.dir / "partition-worker.log")
    rss = netlab.RssSampler(worker.pid)
    try:
        deadline = time.monotonic() + 120
        while not watch.lines and time.monotonic() < deadline:
            time.sleep(0.05)
        base = watch.pushes()[0]
        while watch.pushes()[0] < base + 50:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not train: "
                                   + (net.dir / "partition-worker.log").read_text()[-2000:])
            time.sleep(0.05)
        net.partition("shard0", "drop")
        cut_at = time.monotonic()
        watch.stalled(quiet_s=1.0, timeout=cut_s / 2)  # the batches in flight are done
        cut_mb = rss.mark()
        time.sleep(max(0.0, cut_s - (time.monotonic() - cut_at)))
        blocked_mb = rss.peak_since_mark_mb
        healed = time.time()
        net.heal("shard0")
        resumed = watch.first_change_after(healed, timeout=120)
        time.sleep(5.0)  # training on after the heal
        if worker.poll() is not None:
            raise RuntimeError("the worker stopped after the partition")
    finally:
        worker.terminate()
        worker.wait(30)
        watch.proc.terminate()
    return {"cut_s": cut_s, "resume_s": None if resumed is None else round(resumed, 3),
            "rss_at_cut_mb": round(cut_mb, 1), "rss_blocked_peak_mb": round(blocked_mb, 1),
            "rss_peak_mb": round(rss.peak_mb, 1)}


def run(ctx) -> dict:
    from tests import netlab
    from worker.sources import synthetic_spec_toml
    reason = netlab.unavailable()
    if reason:
        return {"skipped": reason}
    with netlab.NetLab(HOSTS, ctx.workdir / "network") as net:
        net.cluster(synthetic_spec_toml(), ["shard0", "shard1"], ["rep0"])
        net.start_cluster("admin")
        rows, figures = _links(ctx, net)
        part = _partition(ctx, net)
    ctx.log(f"  partition {part['cut_s']:.0f}s: resumed {part['resume_s']} s after the heal; "
            f"worker RSS {part['rss_at_cut_mb']} MB once blocked, {part['rss_blocked_peak_mb']} "
            f"MB peak while blocked, {part['rss_peak_mb']} MB peak overall")
    config = {"cut_s": part["cut_s"], "how": "bridge drops the shard's frames",
              "batch_size": 4096}
    figures += [figure("network_partition_resume_s", part["resume_s"], "s", LOWER, config),
                figure("network_partition_worker_rss_peak_mb", part["rss_peak_mb"], "MB", LOWER,
                       config),
                figure("network_partition_worker_rss_blocked_mb", part["rss_blocked_peak_mb"],
                       "MB", LOWER, config)]
    return {"figures": figures,
            "table": {"columns": ["worker -> shards (one way)", "ev/s batch 4096",
                                  "ev/s batch 512", "ev/s batch 512 max-delay 1",
                                  "push->readable p50 ms", "p99 ms"], "rows": rows},
            "details": {"partition": part},
            "notes": ["every node in its own network namespace on one bridge (2 shards, 1 "
                      "replica, the worker; all on this machine's cores); delays are one way "
                      "through an asyncio relay in the worker's namespace (0 ms: the relay's "
                      "own cost); events/s best of the rounds, settings alternating.",
                      f"shard 0 cut off for {part['cut_s']:.0f} s while training: pushes "
                      f"applied again {part['resume_s']} s after the heal; worker RSS "
                      f"{part['rss_at_cut_mb']} MB once blocked, {part['rss_blocked_peak_mb']} "
                      f"MB while blocked, {part['rss_peak_mb']} MB peak."]}


if __name__ == "__main__":  # the freshness probe, run in the worker's namespace
    print(json.dumps(probe(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
