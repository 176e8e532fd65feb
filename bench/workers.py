"""Two workers on one stream against one worker: throughput and progressive logloss.

Why interleaved halves: two trainers sharing a stream each see every other event, in the
stream's order, and push into the same model at once (Hogwild: shards add whatever arrives).
Each whole `deltaps train HALF` process runs against one fresh cluster of the default layout;
the one-worker run trains the whole file the same way. Throughput is events over the wall time
from the first spawn to the last exit; the two-worker logloss is the event-weighted mean of the
two workers' progressive loglosses (each event scored by the worker that learned it, before it
learned it, with whatever the other worker had pushed by then).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from bench.report import figure
from bench.usertrain import REPO, SEED, _env, deltaps_cmd, deltaps_train, timed, with_cluster


def _halves(tsv: Path) -> list[Path]:
    """Lines 0, 2, 4, ... and 1, 3, 5, ... of `tsv` as two files."""
    lines = tsv.read_bytes().splitlines(keepends=True)
    paths = []
    for k in range(2):
        path = tsv.with_name(f"{tsv.stem}.half{k}{tsv.suffix}")
        path.write_bytes(b"".join(lines[k::2]))
        paths.append(path)
    return paths


def _two_workers(ctx, halves: list[Path], name: str) -> dict:
    def run(cluster):
        procs, outs = [], []
        t0 = time.perf_counter()
        for k, half in enumerate(halves):
            out = open(ctx.workdir / f"{name}-{k}.out", "wb")
            outs.append(out)
            procs.append(subprocess.Popen(
                deltaps_cmd("train", str(half), "--cluster", str(cluster.path), "--json"),
                cwd=REPO, env=_env(), stdout=out, stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL))
        cpu = 0.0
        for proc in procs:
            _pid, status, usage = os.wait4(proc.pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"a two-worker deltaps train exited with {status}")
        seconds = time.perf_counter() - t0
        summaries = []
        for out in outs:
            out.close()
            text = Path(out.name).read_text()
            Path(out.name).unlink()
            summaries.append(json.loads([ln for ln in text.splitlines()
                                         if ln.startswith("{")][-1]))
        return seconds, cpu, summaries

    (seconds, cpu, summaries), nodes = with_cluster(ctx, name, run)
    events = sum(s["events"] for s in summaries)
    logloss = sum(s["logloss"] * s["events"] for s in summaries) / events
    ctx.log(f"  two workers: {events:,d} events in {seconds:.2f}s, logloss {logloss:.4f}")
    return {"seconds": round(seconds, 3), "events": events,
            "events_per_s": round(events / seconds, 1), "logloss": logloss,
            "cpu_s": {"workers": round(cpu, 3), **nodes}}


def run(ctx) -> dict:
    tsv = ctx.workdir / "planted.tsv"
    timed(deltaps_cmd("synth", str(ctx.events), "--seed", str(SEED), "--out", str(tsv)),
          ctx.workdir, "synth")
    halves = _halves(tsv)
    rounds = 2 if ctx.quick else 3
    ones, twos = [], []
    try:
        for r in range(rounds):  # alternated, so drift in the machine hits both alike
            ones.append(deltaps_train(ctx, f"one-{r}", tsv))
            twos.append(_two_workers(ctx, halves, f"two-{r}"))
    finally:
        for path in (tsv, *halves):
            path.unlink(missing_ok=True)
    speed = sorted(t["events_per_s"] / o["events_per_s"] for o, t in zip(ones, twos))
    median = speed[len(speed) // 2]
    one_ll, two_ll = ones[-1]["logloss"], twos[-1]["logloss"]
    rows = [["one worker: deltaps train planted.tsv", ones[-1]["events"],
             " / ".join(f"{o['seconds']:.2f}" for o in ones),
             " / ".join(f"{o['events_per_s']:,.0f}" for o in ones), "", one_ll],
            ["two workers: deltaps train on each interleaved half, at once", twos[-1]["events"],
             " / ".join(f"{t['seconds']:.2f}" for t in twos),
             " / ".join(f"{t['events_per_s']:,.0f}" for t in twos),
             " / ".join(f"{s:.2f}" for s in speed), two_ll]]
    return {
        "figures": [figure("workers.two_over_one_speed", median, "ratio", None,
                           {"rounds": rounds}),
                    figure("workers.one.logloss", one_ll, "nats", None, {}),
                    figure("workers.two.logloss", two_ll, "nats", None, {})],
        "table": {"columns": ["run", "events", "wall s by round", "events/s by round",
                              "two / one speed by round", "progressive logloss"],
                  "rows": rows},
        "notes": [f"Events: `deltaps synth {ctx.events} --seed {SEED}`; the two workers train "
                  "its even and odd lines, at once, against one fresh cluster (2 shards, 1 "
                  "replica); the single worker trains the whole file on its own fresh cluster. "
                  f"{rounds} rounds, alternated. Median speed ratio {median:.2f}.",
                  "Two-worker logloss: the event-weighted mean of the two workers' progressive "
                  "loglosses; each worker learns from weights that miss the other's pushes in "
                  "flight (Hogwild), so it can only be as good as one worker's or worse.",
                  "On a 2-core machine the two workers share the cores with the shards and the "
                  "replica: more workers only help where there are cores to run them."],
    }
