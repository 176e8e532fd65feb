"""Durability costs: push throughput per fsync policy, shard recovery time, replica bootstrap.

Each figure comes from real processes (deploy.local.LocalCluster) on this machine:
- pushes/s with 1 push in flight (latency-bound) and with 16 in flight (group commit shows);
- a shard holding 2**24 slots (16.8M): time to restart after kill -9 with a snapshot plus a log
  tail to replay, split into process start and the recovery itself (the median of 3 kills: one
  varied 0.2-0.9 s between runs of the same code);
- a fresh replica joining that cluster: time until READY (two snapshots of the whole model).
"""
from __future__ import annotations

import signal
import statistics
import time
from collections import deque

import numpy as np

from bench.report import HIGHER, LOWER, figure
from deploy.admin import node_status, take_snapshots
from deploy.local import LocalCluster
from worker.ps_client import PSClient

PUSH_KEYS = 1000
RESTARTS = 3  # kill -9 + restart this many times; figures are medians


def _spec(bits: int) -> str:
    return f"[models.m]\nbits = {bits}\n"


def _pushes(n: int, bits: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        keys = np.unique(rng.integers(0, 1 << bits, PUSH_KEYS)).astype(np.uint64)
        deltas = rng.normal(0, 0.1, (keys.size, 2)).astype(np.float32)  # FTRL's (z, n)
        deltas[:, 1] = np.abs(deltas[:, 1])  # n stays >= 0
        out.append((keys, deltas))
    return out


def _push_rate(client: PSClient, pushes, window: int) -> float:
    inflight: deque = deque()
    start = time.perf_counter()
    for keys, deltas in pushes:
        inflight.append(client.push_async("m", keys, deltas))
        if len(inflight) >= window:
            inflight.popleft().wait()
    while inflight:
        inflight.popleft().wait()
    return len(pushes) / (time.perf_counter() - start)


def push_throughput(ctx) -> tuple[list, list]:
    n = 300 if ctx.quick else 2000
    pushes = _pushes(n, 22)
    figures, rows = [], []
    for policy in ("never", "interval", "always"):
        c = LocalCluster(ctx.workdir / f"fsync-{policy}", _spec(22), 2, 1, fsync=policy)
        try:
            c.start_all()
            client = PSClient(c.cluster.shards())
            sync = _push_rate(client, pushes, 1)
            windowed = _push_rate(client, pushes, 16)
            client.close()
        finally:
            c.stop_all()
        config = {"fsync": policy, "shards": 2, "keys_per_push": PUSH_KEYS, "pushes": n}
        figures += [figure(f"pushes_per_s_fsync_{policy}_1_in_flight", round(sync, 1), "push/s",
                           HIGHER, config),
                    figure(f"pushes_per_s_fsync_{policy}_16_in_flight", round(windowed, 1),
                           "push/s", HIGHER, config)]
        rows.append([policy, round(sync, 1), round(windowed, 1),
                     round(windowed * PUSH_KEYS / 1e6, 2)])
    return figures, rows


def recovery(ctx) -> tuple[list, list, dict]:
    bits = 20 if ctx.quick else 24
    c = LocalCluster(ctx.workdir / "recovery", _spec(bits), 1, 0)
    details = {}
    try:
        c.start_all(wait=True)
        client = PSClient(c.cluster.shards())
        pushes = _pushes(200 if ctx.quick else 1000, bits, 1)
        for keys, deltas in pushes[: len(pushes) // 2]:
            client.push("m", keys, deltas)
        take_snapshots(c.cluster)
        for keys, deltas in pushes[len(pushes) // 2:]:
            client.push("m", keys, deltas)
        client.close()
        restarts, recoveries = [], []
        for _ in range(1 if ctx.quick else RESTARTS):  # each replays the same log tail
            c.stop("shard", 0, signal.SIGKILL)
            t0 = time.monotonic()
            c.start("shard", 0)
            c.wait_ready(timeout=300)
            restarts.append(round(time.monotonic() - t0, 3))
            st = node_status(c.address("shard", 0), 5.0)
            recoveries.append(st["recovery"])
        restart_s = statistics.median(restarts)
        details = {"slots": st["models"]["m"]["slots"], "restarts_s": restarts,
                   "recoveries": recoveries}
        c.cluster.spec.replicas = 1
        from common.config import NodeInfo
        from deploy.layout import free_ports
        c.cluster.nodes.append(NodeInfo("replica", 0,
                                        f"tcp://127.0.0.1:{free_ports('127.0.0.1', 1)[0]}"))
        c.cluster.save(c.path)
        t1 = time.monotonic()
        c.start("replica", 0)
        c.wait_ready(role="replica", timeout=300)
        replica_s = time.monotonic() - t1
    finally:
        c.stop_all()
    slots = details["slots"]
    rec = details["recoveries"][-1]
    recovery_s = statistics.median(r["seconds"] for r in details["recoveries"])
    config = {"slots": slots, "replayed_records": rec["replayed"], "keys_per_record": PUSH_KEYS,
              "restarts": len(restarts)}
    by_run = " / ".join(f"{r:g}" for r in restarts)
    figures = [figure("shard_restart_to_serving_s", round(restart_s, 3), "s", LOWER, config),
               figure("shard_recovery_s", round(recovery_s, 3), "s", LOWER, config),
               figure("replica_bootstrap_to_ready_s", round(replica_s, 3), "s", LOWER,
                      {"slots": 1 << bits, "shards": 1})]
    rows = [["shard restart after kill -9 (process start + recovery; median)",
             round(restart_s, 3),
             f"{slots:,d} slots, {rec['replayed']} log records replayed; by kill: {by_run}"],
            ["  of which recovery (snapshot load + replay; median)", round(recovery_s, 3),
             rec["snapshot"]],
            ["fresh replica: start to READY", round(replica_s, 3), f"{1 << bits:,d} slots"]]
    return figures, rows, details


def run(ctx) -> dict:
    push_figures, push_rows = push_throughput(ctx)
    rec_figures, rec_rows, details = recovery(ctx)
    return {
        "figures": push_figures + rec_figures,
        "table": {"columns": ["what", "seconds / rate", "detail"],
                  "rows": [[f"pushes/s, fsync={p} (1 in flight | 16 in flight | M keys/s)",
                            f"{a:,.0f} | {b:,.0f} | {k}", f"{PUSH_KEYS} keys/push, 2 shards"]
                           for p, a, b, k in push_rows] + rec_rows},
        "details": details,
        "notes": ["A push is acknowledged only after its log record is written (and, with "
                  "fsync=always, fsynced: one fsync covers every push of a batch of requests)."],
    }
