"""The deep sparse model: through the cluster against Keras in one process, against a linear
model and the Bayes floor on the planted nonlinear stream, and its read latency.

On the events of `NonlinearStream` (drawn into memory first, so neither side pays for drawing
them), in the same order, one pass, in rounds (`ROUNDS`), each on a stream of its own seed
(SEED, SEED + 1, ...):

- a fresh `LocalCluster` (2 shards, 1 replica) and a worker process of its own, at the
  niceness `deltaps train` takes by default, train a deep model (hidden [64, 32], the spec's
  defaults otherwise) at batch 1024, and right after it the same architecture, initial values and optimizer as a Keras
  model trains in a process of its own (`bench.deep_keras`) on the same events. Each round
  gives a speed ratio, measured side by side, and a log loss difference; the figures are the
  median ratio and the mean difference. Both sides are deterministic, so what differs between
  seeds is only where float32 rounding takes two equal computations (their difference on one
  seed is of the order of 1e-3, and of either sign);
- in the first round the linear model (FTRL) trains through the same cluster (a `Trainer` in
  this process, as in bench.training), and the stream's
  Bayes-optimal log loss is known: the share of the linear model's gap to the floor that the
  deep model closes;
- single-instance read latency of each model from the first round's replica (closed loop, one
  request at a time, the two models in alternating rounds so that both see the same machine);
- DeepBird's published CPU figure, for reference.

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
ROUNDS = 5  # seeds SEED .. SEED + ROUNDS - 1; --quick runs one
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
    """Train `model` on `chunks` through `cluster` with a `Trainer` in this process."""
    client = PSClient(cluster.cluster.shards(), max_bytes=cluster.spec.max_message_bytes)
    try:
        trainer = Trainer(client, cluster.spec, model, BATCH)
        summary = trainer.train(MemorySource(chunks, BATCH))
    finally:
        client.close()
    return {"events": summary.events, "seconds": summary.seconds,
            "events_per_s": summary.events_per_s, "logloss": summary.logloss,
            "auc": summary.auc}


def _train_worker(cluster: LocalCluster, events: int, seed: int) -> dict:
    """The deep model trained by a worker process of its own (`python -m bench.deep --worker`)
    at the niceness `deltaps train` runs at by default (`[cluster] worker_nice`), so that the
    figure is what a user's worker gets; it draws the stream itself, untimed."""
    done = subprocess.run([sys.executable, "-m", "bench.deep", "--worker", str(cluster.path),
                           str(events), str(seed)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the deep worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker_main(cluster_file: str, events: int, seed: int) -> None:
    from common.config import ClusterFile
    from deploy.runtime.priority import lower_cpu_priority

    cluster = ClusterFile.load(cluster_file)
    chunks = take(NonlinearStream(events, seed), None)
    lower_cpu_priority(cluster.spec.worker_nice)
    client = PSClient(cluster.shards(), max_bytes=cluster.spec.max_message_bytes)
    try:
        summary = Trainer(client, cluster.spec, "deep", BATCH).train(MemorySource(chunks, BATCH))
    finally:
        client.close()
    print(json.dumps({"events": summary.events, "seconds": summary.seconds,
                      "events_per_s": summary.events_per_s, "logloss": summary.logloss,
                      "auc": summary.auc}))


def _keras(events: int, seed: int) -> dict:
    """`bench.deep_keras` on the same stream, in a process of its own (its docstring says why)."""
    done = subprocess.run([sys.executable, "-m", "bench.deep_keras", str(events), str(seed),
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


def _round(workdir: Path, events: int, seed: int, first: bool, quick: bool, log) -> dict:
    """One seed's deep model through a fresh cluster, then Keras; in the first round also the
    linear model and the reads."""
    source = NonlinearStream(events, seed)
    chunks = take(source, None)
    out = {"seed": seed, "bayes": source.bayes_logloss}
    cluster = LocalCluster(workdir / f"deep-{seed}", SPEC, 2, 1)
    try:
        cluster.start_all()
        out["deep"] = _train_worker(cluster, events, seed)
        if first:
            out["lin"] = _train(cluster, "lin", chunks)
            time.sleep(0.5)  # the replica has applied the last updates
            out["reads"] = _reads(cluster, _instances(chunks[0], 200), 200 if quick else 1000,
                                  2 if quick else 4)
            out["spec"] = cluster.spec
    finally:
        cluster.stop_all()
        shutil.rmtree(cluster.dir, ignore_errors=True)
    del chunks
    out["keras"] = _keras(events, seed)
    deep, keras = out["deep"], out["keras"]
    out["ratio"] = deep["events_per_s"] / keras["events_per_s"]
    out["difference"] = deep["logloss"] - keras["logloss"]
    log(f"  seed {seed}: deep through the cluster {deep['events_per_s']:,.0f} ev/s, logloss "
        f"{deep['logloss']:.5f}; Keras {keras['events_per_s']:,.0f} ev/s, logloss "
        f"{keras['logloss']:.5f}: {out['ratio']:.2f}x")
    return out


def run(ctx) -> dict:
    quick = _get(ctx, "quick", False)
    events = min(_get(ctx, "events", 1_000_000), 1_000_000)
    log = _get(ctx, "log", lambda msg: print(msg, file=sys.stderr))
    workdir = Path(_get(ctx, "workdir"))
    rounds = [_round(workdir, events, SEED + r, r == 0, quick, log)
              for r in range(1 if quick else ROUNDS)]
    first = rounds[0]
    deep, keras, lin, reads, spec = (first[k] for k in ("deep", "keras", "lin", "reads", "spec"))
    bayes = first["bayes"]
    log(f"  linear through the cluster: {lin['events_per_s']:,.0f} ev/s, "
        f"logloss {lin['logloss']:.4f}")
    ratio = float(np.median([r["ratio"] for r in rounds]))
    difference = float(np.mean([r["difference"] for r in rounds]))
    closed = (lin["logloss"] - deep["logloss"]) / (lin["logloss"] - bayes)
    deep_rate = float(np.median([r["deep"]["events_per_s"] for r in rounds]))
    keras_rate = float(np.median([r["keras"]["events_per_s"] for r in rounds]))
    m = spec.model("deep")
    config = {"events": events, "batch_size": BATCH, "hidden": HIDDEN, "bits": m.bits,
              "activation": m.activation, "optimizer": vars(m.optimizer), "shards": 2,
              "replicas": 1, "workers": 1, "stream": f"nonlinear:{events}:{SEED}",
              "rounds": len(rounds), "seeds": [r["seed"] for r in rounds]}
    figures = [
        figure("deep_cluster_events_per_s", round(deep_rate, 1), "events/s", HIGHER, config),
        figure("deep_keras_events_per_s", round(keras_rate, 1), "events/s", None, config,
               reference=True),
        figure("deep_cluster_vs_keras_speed", round(ratio, 3), "x", HIGHER, config),
        figure("deep_minus_keras_logloss", round(difference, 5), "nats", LOWER, config),
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
    ratios = ", ".join(f"{r['ratio']:.2f}x" for r in rounds)
    differences = ", ".join(f"{r['difference']:+.5f}" for r in rounds)
    rows = []
    for r in rounds:
        rows += [[f"seed {r['seed']}: deep, cluster (1 worker, 2 shards, 1 replica)",
                  r["deep"]["events_per_s"], r["deep"]["logloss"]],
                 [f"seed {r['seed']}: deep, Keras in one process (same init, lazy Adam)",
                  r["keras"]["events_per_s"], r["keras"]["logloss"]]]
    rows += [[f"seed {SEED}: linear (FTRL), cluster", lin["events_per_s"], lin["logloss"]],
            [f"seed {SEED}: Bayes-optimal", None, bayes],
            ["DeepBird CPU (published, 28 cores)", DEEPBIRD_CPU_SAMPLES_PER_S, None]]
    return {"figures": figures,
            "table": {"columns": ["run", "events/s", "progressive logloss"], "rows": rows},
            "details": {"rounds": [{k: r[k] for k in ("seed", "deep", "keras", "ratio",
                                                      "difference")} for r in rounds],
                        "lin": lin, "reads": reads, "bayes_logloss": bayes},
            "notes": [f"deep vs Keras speed {ratio:.2f}x at batch {BATCH} (median of "
                      f"{len(rounds)} side-by-side rounds: "
                      f"{ratios}); log loss "
                      f"deep minus Keras {difference:+.5f} on average over seeds "
                      f"{', '.join(str(r['seed']) for r in rounds)} "
                      f"({differences}).",
                      f"the deep model closes {closed:.0%} of the linear model's gap to the "
                      f"Bayes floor on seed {SEED} ({lin['logloss']:.4f} -> "
                      f"{deep['logloss']:.4f}, floor {bayes:.4f}).",
                      f"single-instance read p99: deep {reads['deep']['p99']} ms, linear "
                      f"{reads['lin']['p99']} ms (same replica, closed loop).",
                      "a shared machine: one round's events/s are noisy, the median ratio "
                      "of rounds less so."]}


def _instances(batch, n: int) -> list[dict]:
    out: list[dict] = [{} for _ in range(min(n, batch.n))]
    for name, col in batch.columns.items():
        keep = col.rows < len(out)
        for row, value in zip(col.rows[keep].tolist(), col.values[keep].tolist()):
            out[row][name] = value
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        section = run({"quick": quick, "events": 50_000 if quick else 1_000_000,
                       "workdir": tmp})
    for row in section["table"]["rows"]:
        print(row)
    for note in section["notes"]:
        print(note)
