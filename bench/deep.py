"""The deep sparse model: through the cluster against Keras in one process, against a linear
model and the Bayes floor on the planted nonlinear stream, and its read latency.

One `LocalCluster` (2 shards, 1 replica; the worker is this process's `Trainer`, as in
bench.training) holds a deep model (hidden [64, 32], the spec's defaults otherwise) and a
linear one (FTRL) side by side. On the same events of `NonlinearStream` (drawn into memory
first, so neither side pays for drawing them), in the same order, one pass:

- the deep model through the cluster at batch 1024, events/s and progressive log loss, next
  to the same architecture, initial values and optimizer as a Keras model trained in a
  process of its own (`bench.deep_keras`), and next to DeepBird's published CPU figure;
- the linear model through the same cluster, and the stream's Bayes-optimal log loss: the
  share of the linear model's gap to the floor that the deep model closes;
- single-instance read latency of each model from the same replica (closed loop, one request
  at a time, the two models in alternating rounds so that both see the same machine).

`python -m bench.deep [--quick]` runs it alone.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import HIGHER, LOWER, figure
from bench.training import MemorySource, take
from deploy.local import LocalCluster
from serving.client import ServingClient
from worker.ps_client import PSClient
from worker.sources.nonlinear import FIELDS, NonlinearStream
from worker.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
SEED = 11
BATCH = 1024
HIDDEN = [64, 32]
DEEPBIRD_CPU_SAMPLES_PER_S = 13312  # "Deep Learning at Twitter's Scale" (2018), batch 1024, 28-core Xeon
# the stream's fields are category ids: instances sent as JSON numbers are ids, not amounts
_IDS = "".join(f'[transforms.{f}]\nkind = "categorical"\n' for f in FIELDS)
_NAMES = ", ".join(f'"{f}"' for f in FIELDS)
SPEC = _IDS + f"""
[models.deep]
kind = "deep"
hidden = {HIDDEN}
transforms = [{_NAMES}]

[models.lin]
bits = 18
transforms = [{_NAMES}]
[models.lin.optimizer]
name = "ftrl"
learning_rate = 0.05
"""


def _get(ctx, name: str, default=None):
    return ctx.get(name, default) if isinstance(ctx, dict) else getattr(ctx, name, default)


def _train(cluster: LocalCluster, model: str, chunks) -> dict:
    client = PSClient(cluster.cluster.shards(), max_bytes=cluster.spec.max_message_bytes)
    try:
        trainer = Trainer(client, cluster.spec, model, BATCH)
        summary = trainer.train(MemorySource(chunks, BATCH))
    finally:
        client.close()
    return {"events": summary.events, "seconds": summary.seconds,
            "events_per_s": summary.events_per_s, "logloss": summary.logloss,
            "auc": summary.auc}


def _keras(events: int) -> dict:
    """`bench.deep_keras` on the same stream, in a process of its own (its docstring says why)."""
    done = subprocess.run([sys.executable, "-m", "bench.deep_keras", str(events), str(SEED),
                           str(BATCH)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the Keras yardstick failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reads(cluster: LocalCluster, instances: list[dict], per_round: int, rounds: int) -> dict:
    """Per model: p50/p99 ms of single-instance predicts, closed loop."""
    times: dict[str, list[float]] = {"deep": [], "lin": []}
    with ServingClient([cluster.address("replica", 0)]) as client:
        for _ in range(rounds):
            for model in times:
                for i in range(per_round):
                    t0 = time.perf_counter()
                    client.predict(model, [instances[i % len(instances)]])
                    times[model].append((time.perf_counter() - t0) * 1000.0)
    return {m: {"p50": round(float(np.percentile(t, 50)), 3),
                "p99": round(float(np.percentile(t, 99)), 3), "samples": len(t)}
            for m, t in times.items()}


def run(ctx) -> dict:
    quick = _get(ctx, "quick", False)
    events = min(_get(ctx, "events", 1_000_000), 1_000_000)
    log = _get(ctx, "log", lambda msg: print(msg, file=sys.stderr))
    workdir = Path(_get(ctx, "workdir"))
    source = NonlinearStream(events, SEED)
    chunks = take(source, None)
    bayes = source.bayes_logloss
    instances = _instances(chunks[0], 200)
    cluster = LocalCluster(workdir / "deep", SPEC, 2, 1)
    try:
        cluster.start_all()
        deep = _train(cluster, "deep", chunks)
        log(f"  deep through the cluster: {deep['events_per_s']:,.0f} ev/s, "
            f"logloss {deep['logloss']:.4f}")
        lin = _train(cluster, "lin", chunks)
        log(f"  linear through the cluster: {lin['events_per_s']:,.0f} ev/s, "
            f"logloss {lin['logloss']:.4f}")
        time.sleep(0.5)  # the replica has applied the last updates
        reads = _reads(cluster, instances, 200 if quick else 1000, 2 if quick else 4)
        spec = cluster.spec
    finally:
        cluster.stop_all()
        shutil.rmtree(cluster.dir, ignore_errors=True)
    keras = _keras(events)
    log(f"  Keras, one process: {keras['events_per_s']:,.0f} ev/s, logloss {keras['logloss']:.4f}")
    ratio = deep["events_per_s"] / keras["events_per_s"]
    closed = (lin["logloss"] - deep["logloss"]) / (lin["logloss"] - bayes)
    m = spec.model("deep")
    config = {"events": events, "batch_size": BATCH, "hidden": HIDDEN, "bits": m.bits,
              "activation": m.activation, "optimizer": vars(m.optimizer), "shards": 2,
              "replicas": 1, "workers": 1, "stream": f"nonlinear:{events}:{SEED}"}
    figures = [
        figure("deep_cluster_events_per_s", deep["events_per_s"], "events/s", HIGHER, config),
        figure("deep_keras_events_per_s", keras["events_per_s"], "events/s", None, config,
               reference=True),
        figure("deep_cluster_vs_keras_speed", round(ratio, 3), "x", HIGHER, config),
        figure("deep_cluster_logloss", round(deep["logloss"], 5), "nats", LOWER, config),
        figure("deep_keras_logloss", round(keras["logloss"], 5), "nats", None, config,
               reference=True),
        figure("nonlinear_linear_logloss", round(lin["logloss"], 5), "nats", None, config),
        figure("nonlinear_bayes_logloss", round(bayes, 5), "nats", None, config),
        figure("nonlinear_gap_closed", round(closed, 3), "share", HIGHER, config),
        figure("deepbird_cpu_samples_per_s", DEEPBIRD_CPU_SAMPLES_PER_S, "samples/s", None,
               {"batch_size": 1024, "machine": "28-core Xeon Platinum 8180"}, reference=True),
    ] + [figure(f"read_{model}_{q}_ms", st[q], "ms", LOWER, {"closed_loop": True})
         for model, st in reads.items() for q in ("p50", "p99")]
    rows = [["deep, cluster (1 worker, 2 shards, 1 replica)", deep["events_per_s"],
             deep["logloss"]],
            ["deep, Keras in one process (same init, lazy Adam)", keras["events_per_s"],
             keras["logloss"]],
            ["linear (FTRL), cluster", lin["events_per_s"], lin["logloss"]],
            ["Bayes-optimal", None, bayes],
            ["DeepBird CPU (published, 28 cores)", DEEPBIRD_CPU_SAMPLES_PER_S, None]]
    return {"figures": figures,
            "table": {"columns": ["run", "events/s", "progressive logloss"], "rows": rows},
            "details": {"deep": deep, "lin": lin, "keras": keras, "reads": reads,
                        "bayes_logloss": bayes},
            "notes": [f"deep vs Keras speed {ratio:.2f}x at batch {BATCH}; the deep model "
                      f"closes {closed:.0%} of the linear model's gap to the Bayes floor "
                      f"({lin['logloss']:.4f} -> {deep['logloss']:.4f}, floor {bayes:.4f}).",
                      f"single-instance read p99: deep {reads['deep']['p99']} ms, linear "
                      f"{reads['lin']['p99']} ms (same replica, closed loop).",
                      "one run each on a shared machine: events/s figures are noisy."]}


def _instances(batch, n: int) -> list[dict]:
    out: list[dict] = [{} for _ in range(min(n, batch.n))]
    for name, col in batch.columns.items():
        keep = col.rows < len(out)
        for row, value in zip(col.rows[keep].tolist(), col.values[keep].tolist()):
            out[row][name] = value
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        section = run({"quick": quick, "events": 50_000 if quick else 1_000_000,
                       "workdir": tmp})
    for row in section["table"]["rows"]:
        print(row)
    for note in section["notes"]:
        print(note)
