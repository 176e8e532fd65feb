"""The processes the read benchmark runs beside its cluster: load generators and a worker.

Why separate processes: a client in the benchmark's own process would share its interpreter
(and GIL) with the code that measures, and an open-loop generator must keep sending on
schedule whatever the replies do. So every read comes from a child process (multiprocessing,
spawn) that talks ZeroMQ to the replica like any client, and the worker that trains while
reads are measured is a process of its own, placed and niced as `deltaps train` would be.
"""
from __future__ import annotations

import multiprocessing as mp
import select
import time

import numpy as np

from common.messages import ErrorReply, Message, Predict, PredictIds
from deploy.runtime.allocator import keep_message_buffers_on_heap
from common.config import load_spec
from deploy.runtime.placement import place
from deploy.runtime.priority import lower_cpu_priority, request_time_slice
from common.transport import Channel, readable
from worker.ps_client import PSClient
from worker.sources import SyntheticStream
from worker.trainer import Trainer

MODEL = "ctr"
TRAINING_RATE = 1000  # reads per second offered while a worker trains
SEED = 0
CLIENT_SLICE_MS = 0.1  # the load generator's time slice, like a replica's (deploy/runtime/priority.py)


# --- the load generator (runs in a child process) ---------------------------------------------

def _percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    a = np.asarray(latencies) * 1000.0
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
            "p999_ms": round(float(p999), 3), "max_ms": round(float(a.max()), 3)}


def _drain(ch: Channel, sent: dict, latencies: list, errors: list,
           actually_sent: dict | None = None) -> int:
    """Read every waiting reply; latency from the request's scheduled (or sent) time, and in
    `actually_sent["latencies"]` from the moment it really left (open loop)."""
    got = 0
    while ch.reply_waiting():
        msg, rid = ch.read()
        t = time.perf_counter()
        start = sent.pop(rid, None)
        if start is None:
            continue
        got += 1
        if isinstance(msg, ErrorReply):
            errors.append(msg.code)
        else:
            latencies.append(t - start)
            if actually_sent is not None:
                actually_sent.setdefault("latencies", []).append(t - actually_sent.pop(rid))
    return got


def open_loop(address: str, instances: list[dict], rate: float, seconds: float,
              serving_cpus: str = "") -> dict:
    """Send single-instance predicts at `rate` per second on a fixed schedule.

    The generator stands in for a client on another machine, so it asks for the replica's
    short time slice, and runs where the replica does when `serving_cpus` reserves CPUs: on
    these 2 shared cores, its own wake-ups behind a training process would otherwise be
    counted as the replica's latency."""
    request_time_slice(CLIENT_SLICE_MS)
    place("replica", serving_cpus)
    ch = Channel(address)
    fd = ch.fileno()
    for i in range(200):  # warm up: connection, replica caches
        ch.request(Predict(MODEL, [instances[i % len(instances)]]), 10.0)
    n = int(rate * seconds)
    interval = 1.0 / rate
    sent: dict[int, float] = {}
    actually_sent: dict[int, float] = {}
    latencies: list[float] = []
    errors: list[str] = []
    lags: list[float] = []
    t0 = time.perf_counter() + 0.01
    i = 0
    while i < n or sent:
        now = time.perf_counter()
        while i < n and t0 + i * interval <= now:
            due = t0 + i * interval
            msg = Predict(MODEL, [instances[i % len(instances)]])
            lags.append(time.perf_counter() - due)
            rid = ch.send(msg)
            sent[rid] = due
            actually_sent[rid] = due + lags[-1]
            i += 1
        _drain(ch, sent, latencies, errors, actually_sent)
        if i >= n and now > t0 + seconds + 10.0:
            break  # replies that never came are counted as lost
        wait = (t0 + i * interval - time.perf_counter()) if i < n else 0.05
        if wait > 0:
            select.select([fd], [], [], wait)
    ch.close()
    lag = _percentiles(lags)
    service = _percentiles(actually_sent.pop("latencies"))
    return {"offered_per_s": rate, "requests": n, "answered": len(latencies),
            "errors": len(errors), "lost": len(sent),
            "achieved_per_s": round(len(latencies) / seconds, 1), **_percentiles(latencies),
            "from_actual_send": service, "send_lag": lag}


def closed_loop(address: str, requests: list[Message], seconds: float, depth: int = 2) -> dict:
    """Keep `depth` requests in flight for `seconds`; instances answered per second."""
    ch = Channel(address, max_bytes=1 << 30)
    for msg in requests[:3]:  # warm up
        ch.request(msg, 30.0)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    errors: list[str] = []
    instances = 0
    per_request = [r.offsets.size - 1 if isinstance(r, PredictIds) else len(r.instances)
                   for r in requests]
    which: dict[int, int] = {}
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds or sent:
        while len(sent) < depth and time.perf_counter() - t0 < seconds:
            j = k % len(requests)
            rid = ch.send(requests[j])
            sent[rid] = time.perf_counter()
            which[rid] = j
            k += 1
        before = set(sent)
        if not readable([ch], 30.0):
            break
        _drain(ch, sent, latencies, errors)
        instances += sum(per_request[which.pop(rid)] for rid in before - set(sent))
    elapsed = time.perf_counter() - t0
    ch.close()
    return {"requests": len(latencies), "errors": len(errors), "instances": instances,
            "seconds": round(elapsed, 3), "instances_per_s": round(instances / elapsed, 1),
            "depth": depth, **_percentiles(latencies)}


def _child(conn, fn: str, args: tuple) -> None:
    keep_message_buffers_on_heap()  # like a long-running client (deploy/runtime/allocator.py)
    try:
        conn.send(("ok", globals()[fn](*args)))
    except BaseException as exc:  # reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def in_child(fn: str, *args, timeout: float = 600.0) -> dict:
    """Run `fn(*args)` of this module in a fresh process; returns its result."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise TimeoutError(f"load generator {fn} took more than {timeout}s")
        status, value = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status != "ok":
        raise RuntimeError(f"load generator {fn} failed: {value}")
    return value


# --- a worker training beside the reads ------------------------------------------------------

def train_for(shards: list, spec_text: str, seconds: float, seed: int, nice: int,
              serving_cpus: str = "") -> dict:
    """A worker training at full speed for `seconds` at CPU niceness `nice`, off the CPUs
    `serving_cpus` reserves (runs in its own process, placed first as `deltaps train` does)."""
    nice = lower_cpu_priority(nice)
    place("worker", serving_cpus)
    spec = load_spec(text=spec_text)
    client = PSClient(shards, max_bytes=spec.max_message_bytes)
    trainer = Trainer(client, spec, MODEL, batch_size=1024)
    stream = SyntheticStream(10_000_000, seed)
    deadline = time.monotonic() + seconds

    class Timed:
        def read(self, n):
            return stream.read(n) if time.monotonic() < deadline else None

    summary = trainer.train(Timed())
    client.close()
    return {"events": summary.events, "events_per_s": summary.events_per_s, "nice": nice}


def reads_while_training(address: str, instances: list[dict], shards: list, spec_text: str,
                         seconds: float, nice: int, serving_cpus: str = "") -> tuple[dict, dict]:
    """Open-loop reads at TRAINING_RATE while a worker process at niceness `nice` trains at
    full speed: (reads, worker)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_child, args=(child, "train_for", (
        shards, spec_text, seconds + 3.0, SEED + 2, nice, serving_cpus)), daemon=True)
    worker.start()
    child.close()
    time.sleep(1.5)  # training in full swing before reads start
    reads = in_child("open_loop", address, instances, TRAINING_RATE, seconds, serving_cpus)
    if not parent.poll(120):
        raise TimeoutError("training process did not finish")
    status, trained = parent.recv()
    worker.join(10)
    if status != "ok":
        raise RuntimeError(f"training process failed: {trained}")
    return reads, trained
