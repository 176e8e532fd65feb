"""Freshness: time from a push being acknowledged to its new values being readable everywhere.

A probe pushes a tiny change of FTRL's z to one slot; the acknowledgement names the update sequence
number that will carry it; the probe then asks every replica (a predict of an empty instance
returns the version it answered with) until each reports that sequence number or later. The
time from ack to the last replica is one sample. Measured at idle and while a separate worker
process trains at full speed on the planted stream.
"""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from bench.report import LOWER, figure
from common.messages import Predict
from common.transport import Channel
from deploy.local import REPO, LocalCluster
from worker.ps_client import PSClient
from worker.sources import synthetic_spec_toml

SLOT = np.array([6], np.uint64)  # one slot of shard 0


def _probe(client: PSClient, replicas: list[Channel], samples: int, gap_s: float) -> np.ndarray:
    out = []
    for _ in range(samples):
        seq = client.push("ctr", SLOT, np.array([[1e-6, 0.0]], np.float32))[0]
        acked = time.perf_counter()
        for ch in replicas:
            while ch.request(Predict("ctr", [{}]), 5.0).version[0] < seq:
                pass
        out.append((time.perf_counter() - acked) * 1000.0)
        time.sleep(gap_s)
    return np.array(out)


def _stats(ms: np.ndarray) -> dict:
    return {"p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3), "max": round(float(ms.max()), 3)}


def run(ctx) -> dict:
    samples = 100 if ctx.quick else 400
    c = LocalCluster(ctx.workdir / "freshness", synthetic_spec_toml(), 2, 2)
    trainer = None
    try:
        c.start_all()
        client = PSClient(c.cluster.shards())
        replicas = [Channel(n.address) for n in c.cluster.replicas()]
        idle = _stats(_probe(client, replicas, samples, 0.01))
        trainer = subprocess.Popen(
            [sys.executable, "-m", "deploy.nodes.worker", "synthetic:100000000:3",
             "--cluster", str(c.path), "--batch-size", "4096"], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # let it reach full speed
        if trainer.poll() is not None:
            raise RuntimeError(f"training process exited with {trainer.returncode}")
        loaded = _stats(_probe(client, replicas, samples, 0.01))
        for ch in replicas:
            ch.close()
        client.close()
    finally:
        if trainer is not None and trainer.poll() is None:
            trainer.terminate()
            trainer.wait(10)
        c.stop_all()
    config = {"shards": 2, "replicas": 2, "publish_window_ms": c.spec.publish_window_ms,
              "samples": samples, "load": "worker training at full speed, batch 4096"}
    figures = [figure(f"freshness_{name}_{q}_ms", v, "ms", LOWER, config)
               for name, st in (("idle", idle), ("training", loaded)) for q, v in st.items()]
    return {"figures": figures,
            "table": {"columns": ["state", "p50 ms", "p99 ms", "max ms"],
                      "rows": [["idle", idle["p50"], idle["p99"], idle["max"]],
                               ["under full training load", loaded["p50"], loaded["p99"],
                                loaded["max"]]]},
            "notes": ["ack -> readable on every replica (2 shards, 2 replicas, all on 2 cores); "
                      f"shards coalesce for {c.spec.publish_window_ms} ms before publishing."]}
