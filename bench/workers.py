"""Two workers on one stream against one worker: whole `deltaps train` processes, as a user
would run them against one cluster.

Why: shards add whatever deltas arrive (Hogwild across workers), so a second worker should add
throughput where there are cores for it, at some cost in quality (each worker learns from
state that misses the other's latest pushes). The stream is the planted TSV `deltaps synth`
writes, split into its odd and even lines so that both workers see the same stretch of the
stream at the same time, as two partitions of one log would. One worker trains on the whole
file; two train on the halves at once, spawned together; each on a fresh cluster of 2 shards
and 1 replica (`bench.processes.with_cluster`, which also prepares the prebuilt kernel as
`deltaps up` does). Speed is the stream's events over the wall time from spawn to the last
exit; quality the progressive logloss over all events (each worker's, weighted by its events).
Rounds alternate one worker / two workers (the VM's speed drifts within minutes).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from bench.report import HIGHER, LOWER, figure
from bench.processes import REPO, deltaps_cmd, user_env, with_cluster
from bench.usertrain import SEED


def _summary(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"deltaps train printed no JSON summary: {stdout[-500:]}")
    return json.loads(lines[-1])


def trained_together(ctx, name: str, sources: list[Path]) -> dict:
    """One `deltaps train` per source, all spawned at once against one fresh cluster."""
    def run(cluster):
        procs, files = [], []
        t0 = time.perf_counter()
        for i, source in enumerate(sources):
            out = open(ctx.workdir / f"{name}-{i}.out", "w+b")
            files.append(out)
            procs.append(subprocess.Popen(
                deltaps_cmd("train", str(source), "--cluster", str(cluster.path), "--json"),
                cwd=REPO, env=user_env(), stdout=out, stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL))
        cpu = 0.0
        for proc in procs:
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
        seconds = time.perf_counter() - t0
        summaries = []
        for proc, out in zip(procs, files):
            out.seek(0)
            text = out.read().decode(errors="replace")
            out.close()
            Path(out.name).unlink()
            if proc.returncode != 0:
                raise RuntimeError(f"deltaps train exited with {proc.returncode}: {text[-500:]}")
            summaries.append(_summary(text))
        return seconds, cpu, summaries

    (seconds, cpu, summaries), nodes = with_cluster(ctx, name, run)
    events = sum(s["events"] for s in summaries)
    logloss = sum(s["logloss"] * s["events"] for s in summaries) / events
    return {"workers": len(sources), "seconds": round(seconds, 3), "events": events,
            "events_per_s": round(events / seconds, 1), "logloss": logloss,
            "per_worker_logloss": [s["logloss"] for s in summaries],
            "cpu_s": {"workers": round(cpu, 3), **nodes}}


def _halves(tsv: Path) -> list[Path]:
    parts = [tsv.with_name(f"{tsv.stem}-{k}{tsv.suffix}") for k in ("odd", "even")]
    with open(tsv, "rb") as src, open(parts[0], "wb") as a, open(parts[1], "wb") as b:
        for i, line in enumerate(src):
            (a if i % 2 == 0 else b).write(line)
    return parts


def run(ctx) -> dict:
    tsv = ctx.workdir / "workers-planted.tsv"
    subprocess.run(deltaps_cmd("synth", str(ctx.events), "--seed", str(SEED), "--out", str(tsv)),
                   cwd=REPO, env=user_env(), check=True, capture_output=True)
    halves = _halves(tsv)
    rounds = max(1, min(ctx.cli_rounds, 3))
    one, two = [], []
    try:
        for r in range(rounds):
            ctx.log(f"  round {r + 1} of {rounds}")
            one.append(trained_together(ctx, f"workers-1-{r}", [tsv]))
            two.append(trained_together(ctx, f"workers-2-{r}", halves))
            ctx.log(f"  1 worker: {one[-1]['events_per_s']:,.0f} ev/s, logloss "
                    f"{one[-1]['logloss']:.4f}; 2 workers: {two[-1]['events_per_s']:,.0f} ev/s, "
                    f"logloss {two[-1]['logloss']:.4f}")
    finally:
        for path in (tsv, *halves):
            path.unlink(missing_ok=True)
    ratios = [b["events_per_s"] / a["events_per_s"] for a, b in zip(one, two)]
    med = statistics.median
    figs = [figure("workers.one.events_per_s", med(x["events_per_s"] for x in one), "events/s",
                   HIGHER, {"workers": 1}),
            figure("workers.two.events_per_s", med(x["events_per_s"] for x in two), "events/s",
                   HIGHER, {"workers": 2}),
            figure("workers.two_over_one", med(ratios), "x", None),
            figure("workers.one.logloss", one[0]["logloss"], "nats", LOWER, {"workers": 1}),
            figure("workers.two.logloss", med(x["logloss"] for x in two), "nats", LOWER,
                   {"workers": 2})]
    rows = [[f"{x['workers']} worker(s)", x["events"], " / ".join(
                f"{y['seconds']:.2f}" for y in group), med(y["events_per_s"] for y in group),
             x["logloss"], " / ".join(f"{v:.4f}" for v in x["per_worker_logloss"])]
            for group in (one, two) for x in group[:1]]
    notes = [f"`deltaps synth {ctx.events} --seed {SEED}`; two workers train its odd and even "
             "lines at once, one worker the whole file, each on a fresh cluster (2 shards, "
             f"1 replica); {rounds} alternating rounds. Two / one by round: "
             + " / ".join(f"{x:.2f}" for x in ratios) + ". On 2 cores the workers, shards and "
             "replica share the same CPUs, so a second worker mostly competes for them."]
    return {"figures": figs,
            "table": {"columns": ["run", "events", "wall s by round", "events/s (median)",
                                  "progressive logloss", "per worker"], "rows": rows},
            "notes": notes, "details": {"one": one, "two": two}}
