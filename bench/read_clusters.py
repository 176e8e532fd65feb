"""The servers `bench.reads` reads from: trained local clusters (one with a CPU reserved for
serving), the same model scored in this process, and the floor, a server that answers every read
at once without a model.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bench.processes import REPLICAS, SHARDS
from bench.readload import MODEL, SEED, TRAINING_RATE, in_child, reads_while_training
from common.messages import PredictReply, SnapshotRequest
from common.transport import Channel, RequestServer
from deploy.admin import node_status
from deploy.local import LocalCluster
from deploy.runtime.priority import request_time_slice
from serving.model import ServingModel
from worker.ps_client import PSClient
from worker.sources import SyntheticStream
from worker.trainer import Trainer



# --- the floor: the same reads against a server without a model ----------------------------

def noop_server(conn, slice_ms: float) -> None:
    """Answer every predict at once with a fixed one-instance reply until the parent sends
    anything on `conn` (runs in its own process; sends its address first)."""
    request_time_slice(slice_ms)  # as a replica does
    reply = PredictReply(MODEL, [0] * SHARDS, 0.0, np.zeros(1, np.float32))
    server = RequestServer("tcp://127.0.0.1:0", {"predict": lambda _msg: reply}, 1 << 20)
    conn.send(server.address)
    while not conn.poll(0):
        if server.poll(0.1):
            server.handle_ready()
    server.close()


def floor_latency(instances: list[dict], rate: float, seconds: float, slice_ms: float) -> dict:
    """Open-loop single-instance reads at `rate` against `noop_server`: the machine's floor."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=noop_server, args=(child, slice_ms), daemon=True)
    server.start()
    try:
        if not parent.poll(60):
            raise TimeoutError("the no-op server did not start")
        return in_child("open_loop", parent.recv(), instances, rate, seconds)
    finally:
        parent.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()


def cpu_to_reserve() -> str | None:
    """The CPU the benchmark reserves for serving: the highest this process may use; None on a
    single CPU (nothing would be left for training)."""
    allowed = os.sched_getaffinity(0)
    return str(max(allowed)) if len(allowed) > 1 else None


# --- the section ----------------------------------------------------------------------------

def trained_cluster(directory: Path, spec_text: str, events: int, log, **settings) -> LocalCluster:
    """A running LocalCluster whose model has been trained on `events` planted events and whose
    replica has caught up with them."""
    cluster = LocalCluster(directory, spec_text, SHARDS, REPLICAS, **settings)
    try:
        cluster.start_all()
        address = cluster.address("replica", 0)
        ps = PSClient(cluster.cluster.shards(), max_bytes=cluster.spec.max_message_bytes)
        trainer = Trainer(ps, cluster.spec, MODEL, batch_size=1024)
        t0 = time.perf_counter()
        summary = trainer.train(SyntheticStream(events, SEED))
        version = wait_caught_up(address, trainer.last_seqs)
        ps.close()
    except BaseException:
        cluster.stop_all()
        raise
    log(f"  trained {summary.events:,d} events in {time.perf_counter() - t0:.1f}s "
        f"(logloss {summary.logloss:.4f}); replica at version {version}")
    return cluster


def reads_on_reserved_cpus(directory: Path, spec_text: str, events: int, instances: list[dict],
                           seconds: float, serving_cpus: str, log) -> dict:
    """Reads idle and while a niced worker trains, on a cluster with `serving_cpus` reserved
    for its replica (shards and the worker on the other CPUs)."""
    cluster = trained_cluster(directory, spec_text, events, log, serving_cpus=serving_cpus)
    try:
        address = cluster.address("replica", 0)
        idle = in_child("open_loop", address, instances, TRAINING_RATE, seconds, serving_cpus)
        reads, worker = reads_while_training(address, instances, cluster.cluster.shards(),
                                             spec_text, seconds, cluster.spec.worker_nice,
                                             serving_cpus)
    finally:
        codes = cluster.stop_all()
        shutil.rmtree(cluster.dir, ignore_errors=True)
    log(f"  serving_cpus = {serving_cpus}: {TRAINING_RATE} req/s idle p99 {idle['p99_ms']} ms; "
        f"while a worker at nice {worker['nice']} trains ({worker['events_per_s']:,.0f} ev/s): "
        f"p50 {reads['p50_ms']} p99 {reads['p99_ms']} ms")
    return {"serving_cpus": serving_cpus, "idle": idle, "training_niced": reads,
            "worker_niced": worker,
            "exit_codes": {f"{r}-{i}": c for (r, i), c in codes.items()}}


def local_model(cluster: LocalCluster) -> ServingModel:
    """The model as the shards hold it, in this process (snapshots, like a replica bootstraps)."""
    spec = cluster.spec
    model = ServingModel(spec.model(MODEL), spec.feature_spec(MODEL), spec.shards)
    for node in cluster.cluster.shards():
        ch = Channel(node.address, max_bytes=spec.max_message_bytes)
        try:
            r = ch.request(SnapshotRequest(MODEL), 60.0)
        finally:
            ch.close()
        model.apply_snapshot(r.shard, r.n_shards, r.epoch, r.seq, r.values)
    return model


def wait_caught_up(address: str, seqs: dict, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        st = node_status(address, 1.0)
        if st and st["models"][MODEL]["ready"] and all(
                st["models"][MODEL]["version"][int(k)] >= s for k, s in seqs.items()):
            return st["models"][MODEL]["version"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"replica did not catch up to {seqs}: {st}")
        time.sleep(0.05)
