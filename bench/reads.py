"""Read benchmarks: what a client gets from a serving replica of a trained model.

Every read figure comes from a child process that talks ZeroMQ to the replica like any client
(bench/readload.py: the load generators, and the worker that trains meanwhile); this module
builds the clusters, runs the steps and turns what the children measured into the section.

Figures (one `LocalCluster`: 2 shards, 1 replica; model "ctr" of `synthetic_spec_toml()`
trained on the planted stream first):

- single-instance read latency p50/p99/p99.9 at fixed offered rates (open loop: requests are
  sent on a fixed schedule and latency is counted from the *scheduled* send time, so a stall
  is charged to every request it delays: no coordinated omission);
- the floor under that latency: the same generator against a server that answers every read
  at once without a model (same wire, same request loop, same time slice). It is what this
  machine's process wake-ups and loopback cost; on a VM whose idle vCPUs wake slowly it is
  most of a read's p99, and it drifts with the host, so the replica is judged by its ratio;
- batched read throughput (1000 instances per request, feature dicts and pre-hashed ids,
  two requests in flight) against scoring the same batches in-process with `ServingModel`
  built from the same weights: the ratio is what the wire and the replica cost;
- read latency at a fixed rate while a worker (another process) trains at full speed, next to
  the same rate with training idle; the worker trains once at niceness 0 and once at the
  spec's `worker_nice` (what `deltaps train` runs at), to show what lower priority buys reads;
- the same, idle and with the niced worker, on a second cluster that reserves a CPU for serving
  (`[cluster] serving_cpus`, deploy/runtime/placement.py), to show what placement buys reads.

`run(ctx)` takes the bench runner's context (or a dict: workdir, quick, log) and returns the
section dict (figures, table, notes, details). `python -m bench.reads [--quick]` runs it alone.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.read_clusters import (cpu_to_reserve, floor_latency, local_model,
                                 reads_on_reserved_cpus, trained_cluster)
from bench.processes import REPLICAS, SHARDS
from bench.readload import (CLIENT_SLICE_MS, MODEL, SEED, TRAINING_RATE, in_child,
                            reads_while_training)
from common.messages import Predict
from common.features import Batch, Featurizer, columnarize
from common.transport import Channel
from deploy.admin import node_status
from serving.client import ids_message
from serving.model import ServingModel
from worker.sources import SyntheticStream, synthetic_spec_toml

RATES = (200, 1000, 3000)
BATCH = 1000

def _get(ctx, name: str, default=None):
    if isinstance(ctx, dict):
        return ctx.get(name, default)
    return getattr(ctx, name, default)


def batch_to_dicts(batch: Batch) -> list[dict]:
    """Feature dicts (JSON-like instances) of a columnar batch; numbers stay numbers."""
    out: list[dict] = [{} for _ in range(batch.n)]
    for name, col in batch.columns.items():
        for row, value in zip(col.rows.tolist(), col.values.tolist()):
            out[row][name] = value
    return out


def _inprocess(model: ServingModel, dict_batches: list[list[dict]], featurizer: Featurizer,
               seconds: float) -> dict:
    """Instances per second scored in this process: from dicts, and from pre-hashed ids."""
    feats = [featurizer.featurize(columnarize(b, with_labels=False)) for b in dict_batches]
    out = {}
    for name, work in (("dicts", lambda i: model.score(columnarize(dict_batches[i],
                                                                   with_labels=False))),
                       ("ids", lambda i: model.score_features(feats[i]))):
        work(0)
        n, t0 = 0, time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            work(i % len(dict_batches))
            n += BATCH
            i += 1
        out[name] = round(n / (time.perf_counter() - t0), 1)
    return out


def _ratio(reads: dict, idle: dict) -> float | None:
    """Read p99 relative to idle (the latency target is at most 2x while a worker trains)."""
    if not reads["p99_ms"] or not idle["p99_ms"]:
        return None
    return round(reads["p99_ms"] / idle["p99_ms"], 1)


def run(ctx) -> dict:
    from bench.report import HIGHER, LOWER, figure
    quick = bool(_get(ctx, "quick", False))
    log = _get(ctx, "log") or (lambda msg: print(msg, file=sys.stderr, flush=True))
    workdir = _get(ctx, "workdir")
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="deltaps-reads-")) if own_dir else Path(workdir)
    step_s = 2.0 if quick else 5.0
    train_events = 20_000 if quick else 100_000
    spec_text = synthetic_spec_toml()
    details: dict = {}
    cluster = None
    try:
        cluster = trained_cluster(workdir / "cluster-reads", spec_text, train_events, log)
        address = cluster.address("replica", 0)
        held_out = SyntheticStream(20 * BATCH, SEED + 1).read(20 * BATCH)
        instances = batch_to_dicts(held_out)
        dict_batches = [instances[i:i + BATCH] for i in range(0, len(instances), BATCH)]
        featurizer = Featurizer(cluster.spec.feature_spec(MODEL))
        model = local_model(cluster)
        ch = Channel(address, max_bytes=1 << 30)
        same = np.array_equal(ch.request(Predict(MODEL, dict_batches[0]), 30.0).probabilities,
                              model.score(columnarize(dict_batches[0], with_labels=False)))
        ch.close()
        details["served_equals_inprocess"] = bool(same)

        # 1. single-instance latency at fixed offered rates (open loop)
        sweep = {}
        for rate in RATES:
            sweep[rate] = in_child("open_loop", address, instances, rate, step_s)
            s = sweep[rate]
            log(f"  {rate:>5} req/s offered: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
                f"p99.9 {s['p999_ms']} ms, achieved {s['achieved_per_s']}/s, "
                f"errors {s['errors']}, lost {s['lost']}")
        details["single"] = sweep
        details["replica_predict_ms_after_sweep"] = node_status(address, 2.0)["predict"]["ms"]
        floor = floor_latency(instances, TRAINING_RATE, step_s, cluster.spec.replica_slice_ms)
        details["floor"] = floor
        log(f"  {TRAINING_RATE:>5} req/s to a no-op server (the floor): p50 {floor['p50_ms']} ms, "
            f"p99 {floor['p99_ms']} ms, p99.9 {floor['p999_ms']} ms")

        # 2. batched throughput vs in-process scoring
        dict_reqs = [Predict(MODEL, b) for b in dict_batches]
        id_reqs = []
        for b in dict_batches:
            features = featurizer.featurize(columnarize(b, with_labels=False))
            id_reqs.append(ids_message(MODEL, features))
        ch = Channel(address, max_bytes=1 << 30)
        details["served_ids_equal_inprocess"] = bool(np.array_equal(
            ch.request(id_reqs[0], 30.0).probabilities,
            model.score_features(featurizer.featurize(columnarize(dict_batches[0],
                                                                  with_labels=False)))))
        ch.close()
        batched = {"dicts": in_child("closed_loop", address, dict_reqs, step_s, 2),
                   "ids": in_child("closed_loop", address, id_reqs, step_s, 2)}
        inproc = _inprocess(model, dict_batches, featurizer, step_s)
        ratio = {k: round(batched[k]["instances_per_s"] / inproc[k], 3) for k in batched}
        details["batched"] = {"served": batched, "inprocess_instances_per_s": inproc,
                              "ratio": ratio}
        for k in batched:
            log(f"  batch of {BATCH} ({k}): served {batched[k]['instances_per_s']:,.0f} inst/s "
                f"(p50 {batched[k]['p50_ms']} ms/request), in-process {inproc[k]:,.0f} inst/s, "
                f"ratio {ratio[k]}")

        # 3. reads while a worker trains at full speed (at niceness 0, then at the spec's
        # worker_nice), vs idle, at the same offered rate
        before = node_status(address, 2.0)
        idle = in_child("open_loop", address, instances, TRAINING_RATE, step_s)
        log(f"  {TRAINING_RATE} req/s idle: p50 {idle['p50_ms']} p99 {idle['p99_ms']} ms")
        shards = cluster.cluster.shards()
        busy, trained = reads_while_training(address, instances, shards, spec_text, step_s, 0)
        niced, trained_niced = reads_while_training(address, instances, shards, spec_text,
                                                    step_s, cluster.spec.worker_nice)
        for reads, worker in ((busy, trained), (niced, trained_niced)):
            log(f"  {TRAINING_RATE} req/s while a worker at nice {worker['nice']} trains "
                f"({worker['events_per_s']:,.0f} ev/s): p50 {reads['p50_ms']} "
                f"p99 {reads['p99_ms']} ms")
        after = node_status(address, 2.0)
        training = {"idle": idle, "training": busy, "worker": trained,
                    "training_niced": niced, "worker_niced": trained_niced,
                    "replica_updates_applied": (after["models"][MODEL]["updates"]
                                                - before["models"][MODEL]["updates"]),
                    "replica_interleaved_reads": after["interleaved_reads"]
                    - before["interleaved_reads"],
                    "replica_predict_ms": after["predict"]["ms"]}
        details["while_training"] = training
        codes = cluster.stop_all()  # the next cluster runs alone
        details["exit_codes"] = {f"{r}-{i}": c for (r, i), c in codes.items()}

        # 4. the same with a CPU reserved for serving ([cluster] serving_cpus): the replica on
        # it, shards and the worker on the others
        serving_cpus = cpu_to_reserve()
        reserved = (reads_on_reserved_cpus(workdir / "cluster-reserved", spec_text, train_events,
                                           instances, step_s, serving_cpus, log)
                    if serving_cpus is not None else None)
        details["reserved"] = reserved
        details["load_avg"] = list(os.getloadavg())
    finally:
        if cluster is not None:
            cluster.stop_all()
            shutil.rmtree(cluster.dir, ignore_errors=True)
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)

    conf = {"shards": SHARDS, "replicas": REPLICAS, "model": MODEL, "trained_events": train_events,
            "seconds_per_step": step_s, "transport": "tcp loopback",
            "replica_slice_ms": cluster.spec.replica_slice_ms,
            "client_slice_ms": CLIENT_SLICE_MS}
    figs = []
    for rate, s in sweep.items():
        c = {**conf, "offered_per_s": rate, "instances_per_request": 1}
        figs += [figure(f"reads.single.r{rate}.p50_ms", s["p50_ms"], "ms", LOWER, c),
                 figure(f"reads.single.r{rate}.p99_ms", s["p99_ms"], "ms", LOWER, c),
                 figure(f"reads.single.r{rate}.p999_ms", s["p999_ms"], "ms", LOWER, c)]
    c = {**conf, "offered_per_s": TRAINING_RATE, "instances_per_request": 1}
    figs += [figure(f"reads.floor.r{TRAINING_RATE}.p99_ms", floor["p99_ms"], "ms", None, c,
                    reference=True),
             figure(f"reads.single.r{TRAINING_RATE}.p99_vs_floor",
                    _ratio(sweep[TRAINING_RATE], floor), "x", LOWER, c)]
    for k in batched:
        c = {**conf, "instances_per_request": BATCH, "in_flight": 2, "input": k}
        figs += [figure(f"reads.batch{BATCH}.{k}.instances_per_s",
                        batched[k]["instances_per_s"], "instances/s", HIGHER, c),
                 figure(f"reads.batch{BATCH}.{k}.inprocess_instances_per_s", inproc[k],
                        "instances/s", None, c, reference=True),
                 figure(f"reads.batch{BATCH}.{k}.ratio_vs_inprocess", ratio[k], "x", HIGHER, c)]
    c = {**conf, "offered_per_s": TRAINING_RATE, "instances_per_request": 1}
    cn = {**c, "worker_nice": trained_niced["nice"]}
    figs += [figure("reads.idle.p99_ms", idle["p99_ms"], "ms", LOWER, c),
             figure("reads.training.p99_ms", busy["p99_ms"], "ms", LOWER, c),
             figure("reads.training.worker_events_per_s", trained["events_per_s"], "events/s",
                    None, c),
             figure("reads.training_niced.p99_ms", niced["p99_ms"], "ms", LOWER, cn),
             figure("reads.training_niced.worker_events_per_s", trained_niced["events_per_s"],
                    "events/s", None, cn),
             figure("reads.training_niced.p99_vs_idle", _ratio(niced, idle), "x", LOWER, cn)]
    if reserved is not None:
        cr = {**cn, "serving_cpus": reserved["serving_cpus"],
              "worker_nice": reserved["worker_niced"]["nice"]}
        r_idle, r_niced = reserved["idle"], reserved["training_niced"]
        figs += [figure("reads.reserved.idle.p99_ms", r_idle["p99_ms"], "ms", LOWER, cr),
                 figure("reads.reserved.training_niced.p99_ms", r_niced["p99_ms"], "ms", LOWER,
                        cr),
                 figure("reads.reserved.training_niced.worker_events_per_s",
                        reserved["worker_niced"]["events_per_s"], "events/s", None, cr),
                 figure("reads.reserved.training_niced.p99_vs_idle", _ratio(r_niced, r_idle),
                        "x", LOWER, cr)]
    def single(label: str, s: dict) -> list:
        return [label, s["p50_ms"], s["p99_ms"], s["p999_ms"], s["from_actual_send"]["p99_ms"],
                s["send_lag"]["p99_ms"], s["achieved_per_s"], s["errors"] + s["lost"]]

    rows = [single(f"single instance, {r} req/s offered", s) for r, s in sweep.items()]
    rows += [single(f"single instance, {TRAINING_RATE} req/s, to a server answering without a "
                    "model (the floor)", floor)]
    rows += [single(f"single instance, {TRAINING_RATE} req/s, idle", idle)]
    rows += [single(f"single instance, {TRAINING_RATE} req/s, worker training at nice "
                    f"{worker['nice']} ({worker['events_per_s']:,.0f} ev/s)", reads)
             for reads, worker in ((busy, trained), (niced, trained_niced))]
    if reserved is not None:
        cpu, w = reserved["serving_cpus"], reserved["worker_niced"]
        rows += [single(f"single instance, {TRAINING_RATE} req/s, idle, CPU {cpu} reserved for "
                        "serving", reserved["idle"]),
                 single(f"single instance, {TRAINING_RATE} req/s, worker training at nice "
                        f"{w['nice']} ({w['events_per_s']:,.0f} ev/s), CPU {cpu} reserved for "
                        "serving", reserved["training_niced"])]
    rows += [[f"batch of {BATCH} ({k}), 2 in flight: {batched[k]['instances_per_s']:,.0f} "
              f"inst/s = {ratio[k]}x in-process ({inproc[k]:,.0f} inst/s)",
              batched[k]["p50_ms"], batched[k]["p99_ms"], batched[k]["p999_ms"], "", "",
              round(batched[k]["requests"] / batched[k]["seconds"], 1), batched[k]["errors"]]
             for k in batched]
    own = details["replica_predict_ms_after_sweep"]
    notes = [f"One replica of model '{MODEL}' (synthetic_spec_toml(), 22 bits) trained on "
             f"{train_events:,d} planted events; reads are held-out planted events as JSON-like "
             "feature dicts, sent by a separate process over tcp loopback.",
             f"The floor: the same generator against a server that answers at once without a "
             f"model; at {TRAINING_RATE} req/s the replica's p99 is "
             f"{_ratio(sweep[TRAINING_RATE], floor)}x the floor's. The replica's own time per "
             "read (receipt to reply, over its last 2048 reads, from its status): p50/p99 "
             f"{own['p50']}/{own['p99']} ms after the rate sweep, "
             f"{training['replica_predict_ms']['p50']}/{training['replica_predict_ms']['p99']} "
             "ms after the reads while training.",
             "Open loop: latency counts from each request's scheduled send time, so stalls are "
             "charged to every request they delay ('from send': from the moment it left; "
             "'send lag': how late the generator itself was).",
             "'ids' requests carry pre-hashed feature ids (PredictIds: CSR offsets + the low 32 "
             "bits of each id, 4 bytes a feature); the client featurized them beforehand (not "
             "timed). "
             "In-process = ServingModel.score (dicts) / score_features (the featurizer's "
             "Features, field by field) on the same batches in the benchmark's process; the "
             "replica scores the CSR form with score_csr, bit for bit the same.",
             "While training, a worker process trains at full speed against the same 2 shards; "
             "on 2 cores the shards, replica, worker and load generator share the CPU, so the "
             "difference is mostly CPU contention rather than update application "
             f"({training['replica_updates_applied']} update batches applied over both runs, "
             f"reads answered between chunks {training['replica_interleaved_reads']} times).",
             "The worker trains twice: at niceness 0, the replica's priority (figures "
             "reads.training.*, as before there was a setting), then at the spec's worker_nice, "
             "which `deltaps train` applies by default (reads.training_niced.*). Training is "
             "throughput work and reads are latency-critical: a niced worker gives the CPU up "
             "when the replica, a shard or the load generator wakes, and what is left is their "
             "contention with each other. Read p99 while training: "
             f"{_ratio(busy, idle)}x idle at nice {trained['nice']}, "
             f"{_ratio(niced, idle)}x at nice {trained_niced['nice']} (target: at most 2x).",
             ("With a CPU reserved for serving ([cluster] serving_cpus = "
              f"\"{reserved['serving_cpus']}\"; a second cluster trained the same way), the "
              "replica runs on that CPU and the shards and the worker on the others; the load "
              "generator, standing in for a remote client, runs on the reserved CPU too. Read "
              f"p99 while training: {_ratio(reserved['training_niced'], reserved['idle'])}x "
              "idle." if reserved is not None else
              "No CPU reserved for serving: this machine lets the benchmark use only one."),
             f"Served answers equal in-process scores bit for bit: "
             f"{details['served_equals_inprocess']} (dicts), "
             f"{details['served_ids_equal_inprocess']} (pre-hashed ids)."]
    return {"figures": figs,
            "table": {"columns": ["reads", "p50 ms", "p99 ms", "p99.9 ms", "p99 ms from send",
                                  "send lag p99 ms", "requests/s", "errors"], "rows": rows},
            "notes": notes, "details": details}


if __name__ == "__main__":
    import json
    result = run({"quick": "--quick" in sys.argv})
    print(json.dumps({k: result[k] for k in ("table", "notes", "details")}, indent=1,
                     default=str))
