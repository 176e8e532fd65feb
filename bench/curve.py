"""What CurveZMQ costs: push throughput and single-read latency, plain TCP against CURVE.

The same cluster (2 shards, 1 replica, real processes) is started plain and secured
(`LocalCluster(secure=True)`, the keys of `deltaps up --secure`), in alternating rounds so the
machine's drift falls on both alike. Pushes go from a `PSClient` holding the worker key (1000
keys each, 16 in flight: encryption is per message, so this is where its cost on bulk data
shows); reads are single-instance predicts from a client-key channel, one at a time (the
per-message cost on a round trip).
"""
from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import numpy as np

from bench.durability import PUSH_KEYS, _push_rate, _pushes
from bench.report import HIGHER, LOWER, figure
from common.messages import Predict
from common.transport import Channel, client_key, read_key_pair
from deploy.local import LocalCluster
from worker.ps_client import PSClient

MODEL = "m"
WINDOW = 16


def _reads(address: str, n: int) -> list[float]:
    ch = Channel(address)
    try:
        msg = Predict(MODEL, [{"c1": "x", "i1": 2.0}])
        for _ in range(50):  # warm-up: connection, handshake, code paths
            ch.request(msg, 5.0)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            ch.request(msg, 5.0)
            out.append((time.perf_counter() - t0) * 1000.0)
        return out
    finally:
        ch.close()


def _round(ctx, secure: bool, index: int, pushes, reads: int) -> tuple[float, list[float]]:
    c = LocalCluster(ctx.workdir / f"curve-{index}-{'on' if secure else 'off'}",
                     f"[models.{MODEL}]\nbits = 22\n", 2, 1, secure=secure)
    try:
        c.start_all()
        keys = c.dir / "keys"
        with client_key(read_key_pair(keys / "worker.key_secret")) if secure else nullcontext():
            client = PSClient(c.cluster.shards())
        rate = _push_rate(client, pushes, WINDOW)
        client.close()
        with client_key(read_key_pair(keys / "client.key_secret")) if secure else nullcontext():
            lat = _reads(c.address("replica", 0), reads)
        return rate, lat
    finally:
        c.stop_all()


def run(ctx) -> dict:
    rounds = 1 if ctx.quick else 2
    pushes = _pushes(300 if ctx.quick else 1500, 22, 7)
    reads = 500 if ctx.quick else 3000
    rates: dict[bool, list[float]] = {False: [], True: []}
    lats: dict[bool, list[float]] = {False: [], True: []}
    for i in range(rounds):
        for secure in (False, True):
            rate, lat = _round(ctx, secure, i, pushes, reads)
            rates[secure].append(rate)
            lats[secure].extend(lat)
    figures, rows = [], []
    for secure, name in ((False, "plain"), (True, "curve")):
        rate = statistics.median(rates[secure])
        p50, p99 = np.percentile(lats[secure], [50, 99])
        config = {"transport": name, "shards": 2, "keys_per_push": PUSH_KEYS,
                  "in_flight": WINDOW, "reads": len(lats[secure]), "rounds": rounds}
        figures += [figure(f"pushes_per_s_{name}", round(rate, 1), "push/s", HIGHER, config),
                    figure(f"read_p50_ms_{name}", round(float(p50), 3), "ms", LOWER, config),
                    figure(f"read_p99_ms_{name}", round(float(p99), 3), "ms", LOWER, config)]
        rows.append([name, f"{rate:,.0f}", f"{rate * PUSH_KEYS / 1e6:.2f}",
                     f"{p50:.3f}", f"{p99:.3f}"])
    ratio = statistics.median(rates[True]) / statistics.median(rates[False])
    figures.append(figure("curve_push_rate_vs_plain", round(ratio, 3), "x", None))
    return {"figures": figures,
            "table": {"columns": ["transport", "pushes/s (16 in flight)", "M keys/s",
                                  "read p50 ms", "read p99 ms"], "rows": rows},
            "details": {"push_rates": {"plain": rates[False], "curve": rates[True]}},
            "notes": ["CURVE encrypts every message (libsodium); a request's handshake is paid "
                      "once per connection, so it does not appear in either figure."]}


if __name__ == "__main__":
    import json
    import sys
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    with tempfile.TemporaryDirectory() as tmp:
        out = run(SimpleNamespace(quick="--quick" in sys.argv, workdir=Path(tmp)))
    print(json.dumps(out["table"], indent=1))
