"""Footprint: memory per parameter on a shard and a replica, bytes on the wire per pushed key,
CPU seconds per million events of each process.

Resident memory is read from /proc after training has touched the model; a shard keeps the
optimizer's state per slot, and the weight where it is not computed from the state (FTRL: z
and n; AdaGrad: w and g2), a replica the weight only.
"""
from __future__ import annotations

import time

import numpy as np

from bench.report import LOWER, figure
from common.messages import Push
from common.wire import encode
from deploy.local import LocalCluster
from worker.ps_client import PSClient
from worker.sources import SyntheticStream, synthetic_spec_toml
from worker.trainer import Trainer


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    import os
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wire_bytes_per_key(keys: int) -> float:
    msg = Push("ctr", np.arange(keys, dtype=np.uint64), np.ones(keys, np.float32), "w" * 16, 1)
    return sum(len(f) for f in encode(msg, 1)) / keys


def run(ctx) -> dict:
    events = 100_000 if ctx.quick else 1_000_000
    bits = 22
    c = LocalCluster(ctx.workdir / "footprint", synthetic_spec_toml(bits), 2, 1)
    try:
        c.start_all()
        idle = {name: _rss_bytes(p.pid) for name, p in c.procs.items()}
        cpu0 = {name: _cpu_seconds(p.pid) for name, p in c.procs.items()}
        client = PSClient(c.cluster.shards())
        t0 = time.process_time()
        Trainer(client, c.spec, "ctr", 4096).train(SyntheticStream(events, seed=2))
        worker_cpu = time.process_time() - t0
        client.close()
        time.sleep(0.5)
        rss = {name: _rss_bytes(p.pid) for name, p in c.procs.items()}
        cpu = {name: _cpu_seconds(p.pid) - cpu0[name] for name, p in c.procs.items()}
    finally:
        c.stop_all()
    slots = 1 << bits
    shard_bytes = (rss[("shard", 0)] + rss[("shard", 1)]) / slots
    replica_bytes = rss[("replica", 0)] / slots
    per_m = 1e6 / events
    rows = [["shard (both)", round(shard_bytes, 2), f"idle {idle[('shard', 0)] / 2**20:.0f} MiB "
             f"-> {rss[('shard', 0)] / 2**20:.0f} MiB each", round(cpu[("shard", 0)] * per_m, 2)
             + round(cpu[("shard", 1)] * per_m, 2)],
            ["replica", round(replica_bytes, 2), f"{rss[('replica', 0)] / 2**20:.0f} MiB",
             round(cpu[("replica", 0)] * per_m, 2)],
            ["worker", None, "", round(worker_cpu * per_m, 2)]]
    wire = {k: round(wire_bytes_per_key(k), 2) for k in (100, 1000, 25000)}
    config = {"bits": bits, "slots": slots, "events": events, "optimizer": "ftrl"}
    return {"figures": [figure("shard_rss_bytes_per_slot", round(shard_bytes, 2), "B", LOWER, config),
                        figure("replica_rss_bytes_per_slot", round(replica_bytes, 2), "B", LOWER,
                               config),
                        figure("wire_bytes_per_pushed_key_1000", wire[1000], "B", LOWER),
                        figure("cpu_s_per_1m_events_shards", rows[0][3], "s", LOWER, config),
                        figure("cpu_s_per_1m_events_replica", rows[1][3], "s", LOWER, config),
                        figure("cpu_s_per_1m_events_worker", rows[2][3], "s", LOWER, config)],
            "table": {"columns": ["process", "RSS bytes per slot", "RSS", "CPU s per 1M events"],
                      "rows": rows + [[f"wire bytes per pushed key ({k} keys/push)", v, "", None]
                                      for k, v in wire.items()]},
            "notes": [f"{slots:,d}-slot FTRL model after {events:,d} planted events at batch "
                      "4096; the ideal is 12 B/slot on shards (w, z, n as float32) and 4 B on a "
                      "replica, plus the Python runtime."]}
