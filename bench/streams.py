"""Streams in: learning speed from a Redis stream against from a file of the same events, and
freshness from XADD to readable on every replica at a steady event rate.

- Speed: the same planted events as a JSON lines file and as a Redis stream (one entry per
  event, JSON in `data`); `deltaps train FILE` and `deltaps train redis://...--until-empty`
  as whole processes, one run each, on one cluster (each into its own model). The figure is
  the events/s each summary reports (the training loop, reading and acknowledging included).
- Freshness: a producer thread XADDs events at a steady rate while a worker follows the
  stream; every `PROBE_EVERY_S` a probe event carrying a feature never seen before is XADDed,
  and every replica is asked (one predict of the probe instance and of an empty one) until
  the two scores differ on each: the probe's weight is then readable everywhere. The model is
  FTRL without L1, so one event makes a weight nonzero.

redis-server is started here on a free loopback port with its own directory (no persistence)
and stopped by PID.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from bench.report import HIGHER, LOWER, figure
from common.messages import Predict
from common.transport import Channel
from deploy.layout import free_ports
from deploy.local import REPO, LocalCluster
from worker.sources import write_synthetic

SPEC = """
[models.file]
bits = 20
[models.redis]
bits = 20
[models.fresh]
bits = 20
"""
RATE = 5000  # events/s of the freshness run
TICK_S = 0.01
PROBE_EVERY_S = 0.1


def _redis(directory):
    import redis
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_ports("127.0.0.1", 1)[0]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(directory), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis("127.0.0.1", port)
    for _ in range(400):
        try:
            client.ping()
            return proc, port, client
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _train(c, source: str, model: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "deploy.nodes.worker", source, "--cluster",
                          str(c.path), "--model", model, "--batch-size", "4096", "--json",
                          "--metrics", "off", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"deltaps train {source} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _produce(r, lines: list[bytes], stop: threading.Event) -> None:
    """XADD `RATE` events/s, a tick's worth at a time, on a fixed schedule."""
    per_tick = int(RATE * TICK_S)
    due, i = time.perf_counter(), 0
    while not stop.is_set():
        pipe = r.pipeline(transaction=False)
        for _ in range(per_tick):
            pipe.xadd("live", {"data": lines[i % len(lines)]})
            i += 1
        pipe.execute()
        due += TICK_S
        time.sleep(max(0.0, due - time.perf_counter()))


def _probe(r, replicas: list[Channel], k: int) -> float:
    instances = [{"probe": f"p{k}"}, {}]
    start = time.perf_counter()
    r.xadd("live", {"data": json.dumps({"label": 1, "features": {"probe": f"p{k}"}})})
    for ch in replicas:
        while True:
            p = ch.request(Predict("fresh", instances), 5.0).probabilities
            if p[0] != p[1]:
                break
            time.sleep(0.0005)
    return (time.perf_counter() - start) * 1000.0


def run(ctx) -> dict:
    n = min(ctx.events, 50_000 if ctx.quick else 500_000)
    samples = 30 if ctx.quick else 150
    path = write_synthetic(ctx.workdir / "streams.jsonl", n, seed=3, fmt="jsonl")
    lines = path.read_bytes().splitlines()
    redis_proc, port, r = _redis(ctx.workdir / "redis")
    c = LocalCluster(ctx.workdir / "streams", SPEC, 2, 2)
    worker = None
    try:
        t0 = time.perf_counter()
        for i in range(0, n, 10_000):
            pipe = r.pipeline(transaction=False)
            for line in lines[i:i + 10_000]:
                pipe.xadd("ev", {"data": line})
            pipe.execute()
        xadd_rate = n / (time.perf_counter() - t0)
        c.start_all()
        from_file = _train(c, str(path), "file")
        from_redis = _train(c, f"redis://127.0.0.1:{port}/ev?group=bench", "redis",
                            "--until-empty")

        worker = subprocess.Popen(
            [sys.executable, "-m", "deploy.nodes.worker",
             f"redis://127.0.0.1:{port}/live?group=fresh", "--cluster", str(c.path),
             "--model", "fresh", "--batch-size", "4096", "--metrics", "off"], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop = threading.Event()
        producer = threading.Thread(target=_produce, args=(r, lines, stop), daemon=True)
        producer.start()
        replicas = [Channel(node.address) for node in c.cluster.replicas()]
        _probe(r, replicas, -1)  # the worker is up and the model declared
        time.sleep(1.0)
        fresh = []
        for k in range(samples):
            fresh.append(_probe(r, replicas, k))
            time.sleep(PROBE_EVERY_S)
        stop.set()
        producer.join(10)
        lag = r.xinfo_groups("live")[0]
        for ch in replicas:
            ch.close()
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        c.stop_all()
        r.close()
        redis_proc.terminate()
        redis_proc.wait(10)
    ms = np.array(fresh)
    p50, p99 = round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 99)), 2)
    ratio = round(from_redis["events_per_s"] / from_file["events_per_s"], 3)
    config = {"events": n, "batch_size": 4096, "shards": 2, "replicas": 2}
    fconfig = {"rate_events_per_s": RATE, "samples": samples, "shards": 2, "replicas": 2,
               "publish_window_ms": c.spec.publish_window_ms}
    return {
        "figures": [figure("stream_file_events_per_s", from_file["events_per_s"], "ev/s",
                           HIGHER, config),
                    figure("stream_redis_events_per_s", from_redis["events_per_s"], "ev/s",
                           HIGHER, config),
                    figure("stream_redis_over_file", ratio, "x", HIGHER, config),
                    figure("stream_xadd_to_readable_p50_ms", p50, "ms", LOWER, fconfig),
                    figure("stream_xadd_to_readable_p99_ms", p99, "ms", LOWER, fconfig)],
        "table": {"columns": ["what", "value", "detail"],
                  "rows": [["deltaps train FILE (JSON lines)",
                            f"{from_file['events_per_s']:,.0f} ev/s", f"{n:,d} events"],
                           ["deltaps train redis://", f"{from_redis['events_per_s']:,.0f} ev/s",
                            f"ratio {ratio} of the file's"],
                           ["XADD -> readable on every replica", f"p50 {p50} ms, p99 {p99} ms",
                            f"at {RATE:,d} events/s, {samples} probes; group lag at the end "
                            f"{lag.get(b'lag', lag.get('lag'))} entries"]]},
        "details": {"xadd_events_per_s": round(xadd_rate), "file": from_file,
                    "redis": from_redis, "freshness_ms": [round(x, 2) for x in fresh],
                    "group_after": {k.decode() if isinstance(k, bytes) else k:
                                    v.decode() if isinstance(v, bytes) else v
                                    for k, v in lag.items()}},
        "notes": ["One entry per event; the worker acknowledges (XACK) a batch's entries once "
                  "every shard acknowledged its push, and journals the push in Redis first."],
    }
