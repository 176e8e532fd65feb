"""Training as a user runs it: the whole `deltaps train FILE` process against a running cluster,
set against the whole `vw -d FILE` process, on the same events.

Why: a user with a file runs `deltaps up; deltaps train FILE` and compares it with `vw -d FILE`.
Both pay for starting an interpreter, importing, reading and parsing the file, learning and
exiting, so each is timed as one process, wall time from spawn to exit, by the same code
(`timed`); neither is handed pre-parsed input. deltaps runs with its defaults (whatever they
are at this commit: batch size, featurization, optimizer) against a fresh local cluster of
2 shards and 1 replica started untimed (`deploy.local.LocalCluster`, the processes
`deltaps up` starts), so its progressive logloss starts from zero weights every round. The
harness only runs the CLI: it depends on no trainer, reader or optimizer internals, and reads
deltaps' figures from the JSON summary `deltaps train --json` prints.

VW is the 9.x command line of the vowpalwabbit package (`python -m vowpalwabbit ARGS`: the
package's entry point, VW's own parser and learner over the file), with
`--loss_function logistic --link logistic -b BITS` (deltaps' default model's bits). Its text
is written untimed by `bench.vwtext` from the events deltaps' own reader yields from the same
file, featurized by the data's own spec (the planted model's; MovieLens' categorical ids and
crosses): what someone who knows the data would give VW. VW runs with its defaults, and
`--ftrl` over an alpha grid (quality only; the best is named as tuned on the evaluation
stream itself, an optimistic figure).

Progressive logloss: deltaps' summary scores every event before learning it; VW's printed
"average loss" with a logistic loss is the mean over examples of log(1 + exp(-y m)) in nats,
also computed before each example is learned: the same quantity. One extra VW run writes its
predictions (`-p`, probabilities under `--link logistic`) and their logloss against the same
labels is checked to equal the printed average (`loss_check`).

Speed is timed in interleaved rounds (deltaps, VW, deltaps, VW, ...): this shared 2-core VM's
speed drifts by up to ±30% within a minute, so each deltaps run is set against the VW run
seconds after it; the ratio is reported per round and as the median over rounds.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.processes import REPLICAS, SHARDS, deltaps_cmd, timed, with_cluster
from bench.report import HIGHER, LOWER, figure
from bench.train_profile import profile, profile_note, sampled, spy_note
from bench.training import take
from bench.vwtext import write_vw
from common.config import load_spec
from common.linear import logloss
from worker.sources import (MOVIELENS_SPEC_TOML, SyntheticStream, open_source,
                            synthetic_spec_toml)

SEED = 0
ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
QUICK_ALPHAS = (0.05, 0.2, 0.5)

def deltaps_train(ctx, name: str, source: Path, extra: tuple[str, ...] = ()) -> dict:
    """One whole `deltaps train SOURCE --json` process on a fresh cluster."""
    def run(cluster):
        return timed(deltaps_cmd("train", str(source), "--cluster", str(cluster.path), "--json",
                                 *extra), ctx.workdir, name)

    r, nodes = with_cluster(ctx, name, run)
    lines = [ln for ln in r["stdout"].splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"deltaps train printed no JSON summary: {r['stdout'][-500:]}")
    summary = json.loads(lines[-1])
    summary.pop("last_seqs", None)
    events = int(summary["events"])
    out = {"command": "deltaps train " + " ".join([source.name, *extra]),
           "seconds": r["seconds"], "events": events,
           "events_per_s": round(events / r["seconds"], 1),
           "logloss": summary["logloss"], "auc": summary.get("auc"),
           "cpu_s": {"worker": r["cpu_seconds"], **nodes},
           "worker_max_rss_mb": r["max_rss_mb"], "summary": summary}
    ctx.log(f"  deltaps train {source.name}: {events:,d} events in {r['seconds']:.2f}s "
            f"({out['events_per_s']:,.0f} ev/s whole process), logloss {out['logloss']:.4f}")
    return out


def default_bits() -> int:
    """-b for VW: the bits of the model `deltaps up` gives with no spec (its only model)."""
    spec = load_spec(text="")
    (model,) = spec.models
    return spec.model(model).bits


def _default_batch_size():
    """`deltaps train`'s default --batch-size for a linear model at this commit (read from the
    CLI itself)."""
    from deploy.nodes.worker import DEFAULT_BATCH
    return DEFAULT_BATCH["linear"]


def vw_args(data: Path, bits: int, extra: tuple[str, ...] = ()) -> list[str]:
    return ["-d", str(data), "-b", str(bits), "--loss_function", "logistic", "--link",
            "logistic", *extra]


def vw_train(ctx, name: str, data: Path, bits: int, extra: tuple[str, ...] = ()) -> dict:
    """One whole `vw -d DATA` process; its progressive logloss from its printed summary."""
    args = vw_args(data, bits, extra)
    r = timed([sys.executable, "-m", "vowpalwabbit", *args], ctx.workdir, name)
    found = {}
    for line in r["stderr"].splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.strip() in ("number of examples", "average loss"):
            found[key.strip()] = value.strip()
    if "average loss" not in found:
        raise RuntimeError(f"no 'average loss' in VW's output: {r['stderr'][-1000:]}")
    events = int(found["number of examples"])
    return {"command": "vw " + " ".join(args), "seconds": r["seconds"], "events": events,
            "events_per_s": round(events / r["seconds"], 1),
            "logloss": float(found["average loss"]), "cpu_seconds": r["cpu_seconds"],
            "max_rss_mb": r["max_rss_mb"]}


def loss_check(ctx, data: Path, bits: int, labels: np.ndarray) -> dict:
    """VW's printed average loss against the logloss of its own -p predictions."""
    preds_path = ctx.workdir / "vw-check.preds"
    r = vw_train(ctx, "vw-check", data, bits, ("-p", str(preds_path)))
    preds = np.array(preds_path.read_bytes().split(), dtype=np.float64)
    preds_path.unlink()
    ours = float(logloss(preds, labels).mean()) if preds.size == labels.size else float("nan")
    return {"vw_printed": r["logloss"], "from_predictions": round(ours, 6),
            "same": bool(abs(ours - r["logloss"]) < 1e-5)}


def compare_cli(ctx, prefix: str, source: Path, vw_data: Path, labels: np.ndarray,
                deltaps_extra: tuple[str, ...] = ()) -> dict:
    """The rounds, VW's grid, the loss check and the profile for one data set: a section."""
    bits = default_bits()
    rounds = ctx.cli_rounds
    ours, theirs = [], []
    for r in range(rounds):
        ctx.log(f"  round {r + 1} of {rounds}")
        ours.append(deltaps_train(ctx, f"{prefix}-deltaps-{r}", source, deltaps_extra))
        theirs.append(vw_train(ctx, f"{prefix}-vw-{r}", vw_data, bits))
        ctx.log(f"  vw -d: {theirs[-1]['events']:,d} events in {theirs[-1]['seconds']:.2f}s, "
                f"logloss {theirs[-1]['logloss']:.4f}")
    startup = {"deltaps": deltaps_train(ctx, f"{prefix}-startup", source,
                                        ("--limit", "1"))["seconds"],
               "vw": vw_train(ctx, f"{prefix}-vw-startup", vw_data, bits,
                              ("--examples", "1"))["seconds"]}
    alphas = QUICK_ALPHAS if ctx.quick else ALPHAS
    grid = [{"ftrl_alpha": a, **vw_train(ctx, f"{prefix}-vw-ftrl", vw_data, bits,
                                         ("--ftrl", "--ftrl_alpha", repr(a)))} for a in alphas]
    best = min(grid, key=lambda g: g["logloss"])
    check = loss_check(ctx, vw_data, bits, labels)
    prof = profile(ctx, f"{prefix}-profile", source)
    spy = sampled(ctx, f"{prefix}-spy", source)
    ratios = [round(a["events_per_s"] / b["events_per_s"], 4) for a, b in zip(ours, theirs)]
    cpu_ratio = [round(sum(a["cpu_s"].values()) / b["cpu_seconds"], 4)
                 for a, b in zip(ours, theirs)]
    med = statistics.median
    d0, v0 = ours[0], theirs[0]
    res = {"rounds": rounds, "bits": bits, "deltaps": ours, "vw_default": theirs,
           "startup_s": startup, "vw_ftrl_grid": grid, "vw_ftrl_best": best,
           "loss_check": check, "profile": prof, "sampled_profile": spy,
           "speed_ratio_by_round": ratios, "speed_ratio_median": med(ratios),
           "cpu_ratio_by_round": cpu_ratio,
           "same_quality_every_round": len({(o["logloss"], o["auc"]) for o in ours}) == 1,
           "same_events": all(o["events"] == v["events"] for o, v in zip(ours, theirs))}
    n = d0["events"]
    per_m = lambda s: round(s * 1e6 / max(n, 1), 2)  # noqa: E731
    conf = {"command": d0["command"] + " (defaults)", "events": n, "shards": SHARDS,
            "replicas": REPLICAS, "workers": 1}
    vconf = {"command": v0["command"], "events": v0["events"]}
    p = f"{prefix}.cli"
    dcpu = {k: med(o["cpu_s"][k] for o in ours) for k in d0["cpu_s"]}
    figs = [figure(f"{p}.deltaps.events_per_s", med(o["events_per_s"] for o in ours),
                   "events/s", HIGHER, conf),
            figure(f"{p}.deltaps.speed_vs_vw_default", res["speed_ratio_median"], "x", HIGHER,
                   conf),
            figure(f"{p}.deltaps.logloss", d0["logloss"], "nats", LOWER, conf, band=0.01),
            figure(f"{p}.deltaps.auc", d0["auc"], "", HIGHER, conf, band=0.01),
            figure(f"{p}.deltaps.logloss_minus_vw_best",
                   round(d0["logloss"] - min(v0["logloss"], best["logloss"]), 5), "nats", None,
                   conf),
            figure(f"{p}.deltaps.cpu_s_per_1m_total", per_m(sum(dcpu.values())), "cpu s",
                   LOWER, conf),
            figure(f"{p}.deltaps.cpu_vs_vw_default", med(cpu_ratio), "x", LOWER, conf),
            figure(f"{p}.vw.default.events_per_s", med(v["events_per_s"] for v in theirs),
                   "events/s", HIGHER, vconf, reference=True),
            figure(f"{p}.vw.default.logloss", v0["logloss"], "nats", LOWER, vconf,
                   reference=True, band=0.01),
            figure(f"{p}.vw.default.cpu_s_per_1m", per_m(med(v["cpu_seconds"] for v in theirs)),
                   "cpu s", LOWER, vconf, reference=True),
            figure(f"{p}.vw.ftrl_best.logloss", best["logloss"], "nats", LOWER,
                   {"command": best["command"], "events": best["events"]}, reference=True,
                   band=0.01)]
    rows = [[f"deltaps train {source.name} (defaults; {SHARDS} shards, {REPLICAS} replica "
             "running)", n, " / ".join(f"{o['seconds']:.2f}" for o in ours),
             med(o["events_per_s"] for o in ours), " / ".join(f"{x:.2f}" for x in ratios),
             res["speed_ratio_median"], d0["logloss"], d0["auc"],
             f"total {per_m(sum(dcpu.values()))}: "
             + ", ".join(f"{k} {per_m(v)}" for k, v in sorted(dcpu.items()))],
            [f"vw -d {vw_data.name} (defaults)", v0["events"],
             " / ".join(f"{v['seconds']:.2f}" for v in theirs),
             med(v["events_per_s"] for v in theirs), "", "", v0["logloss"], "",
             per_m(med(v["cpu_seconds"] for v in theirs))]]
    rows += [[f"vw -d --ftrl --ftrl_alpha {g['ftrl_alpha']:g}"
              + (" (best of grid)" if g is best else ""), g["events"], f"{g['seconds']:.2f}",
              g["events_per_s"], "", "", g["logloss"], "", per_m(g["cpu_seconds"])]
             for g in grid]
    notes = [
        f"Headline: the whole `deltaps train {source.name}` process (defaults; spawn to exit, "
        f"cluster of {SHARDS} shards + {REPLICAS} replica already running, fresh per round) "
        f"against the whole `vw -d {vw_data.name}` process (`python -m vowpalwabbit "
        f"-d FILE -b {bits} --loss_function logistic --link logistic`), in {rounds} "
        "interleaved rounds (deltaps, VW, ...). Speed / VW by round: "
        + " / ".join(f"{x:.2f}" for x in ratios) + f"; median {res['speed_ratio_median']:.2f}.",
        "Progressive logloss: deltaps' from its JSON summary; VW's printed 'average loss' "
        "(mean log(1+exp(-y m)) before learning each example, nats). Checked on one VW run "
        f"with -p: printed {check['vw_printed']:.6f}, from its predictions "
        f"{check['from_predictions']:.6f}"
        + ("" if check["same"] else " — WARNING: they differ, so the two are not comparable")
        + ".",
        "VW --ftrl alpha grid (beta and l2 at VW's defaults; tuned on the evaluation stream "
        "itself, so the best is optimistic): " + ", ".join(
            f"{g['ftrl_alpha']:g}: {g['logloss']:.4f}" for g in grid)
        + f"; best alpha {best['ftrl_alpha']:g}.",
        f"Fixed cost of a process (one event: `deltaps train --limit 1` on a fresh cluster, "
        f"`vw --examples 1`): deltaps {startup['deltaps']:.2f}s, VW {startup['vw']:.2f}s. "
        "deltaps' own rate over its training loop (its summary, startup excluded): "
        + " / ".join(f"{o['summary']['events_per_s']:,.0f}" for o in ours) + " events/s, in "
        + f"{d0['summary'].get('batches', '?')} batches (default batch size "
        + f"{_default_batch_size()}).",
        "CPU s per 1M events: user+system of the train process (wait4) and of every node "
        "(psutil) over the run; VW's of its process. deltaps train runs at its default "
        "niceness (worker_nice), VW at the caller's.",
        profile_note(prof)] + ([spy_note(spy)] if spy else [])
    if not res["same_events"]:
        notes.append("WARNING: deltaps and VW counted different numbers of events.")
    if not res["same_quality_every_round"]:
        notes.append("WARNING: deltaps' logloss differed between rounds (a single worker "
                     "should learn the same weights every time).")
    columns = ["run", "events", "wall s by round", "events/s (median)", "speed / VW by round",
               "speed / VW (median)", "progressive logloss", "AUC", "CPU s per 1M events"]
    return {"figures": figs, "table": {"columns": columns, "rows": rows}, "notes": notes,
            "details": res}


def _vw_text(ctx, name: str, source: Path, spec_text: str, model: str,
             limit: int | None = None) -> tuple[Path, np.ndarray]:
    """VW's twin of `source`: the events deltaps' reader yields, written untimed."""
    spec = load_spec(text=spec_text)
    data = ctx.workdir / f"{name}.vw"
    t0 = time.perf_counter()
    events, labels = write_vw(take(open_source(str(source)), limit), spec.feature_spec(model),
                              data)
    ctx.log(f"  VW text for {name}: {events:,d} events, {data.stat().st_size / 1e6:.0f} MB in "
            f"{time.perf_counter() - t0:.1f}s (untimed)")
    return data, labels


def planted(ctx) -> dict:
    """`deltaps synth N` to a TSV; `deltaps train` on it against `vw -d` on its VW twin."""
    tsv = ctx.workdir / "planted.tsv"
    timed(deltaps_cmd("synth", str(ctx.events), "--seed", str(SEED), "--out", str(tsv)),
          ctx.workdir, "synth")
    ctx.log(f"  wrote {tsv.name}: {tsv.stat().st_size / 1e6:.0f} MB")
    data, labels = _vw_text(ctx, "planted", tsv, synthetic_spec_toml(), "ctr")
    try:
        out = compare_cli(ctx, "planted", tsv, data, labels)
    finally:
        data.unlink(missing_ok=True)
    stream = SyntheticStream(ctx.events, SEED)  # the stream `deltaps synth` wrote
    while stream.read(65536) is not None:
        pass
    bayes = stream.bayes_logloss
    out["figures"].append(figure("planted.cli.bayes_logloss", bayes, "nats", None,
                                 {"stream": f"synthetic:{ctx.events}:{SEED}"}))
    out["table"]["rows"].append(["Bayes-optimal (the planted model itself)", ctx.events, "", "",
                                 "", "", bayes, "", ""])
    out["notes"].insert(0, f"Events: `deltaps synth {ctx.events} --seed {SEED}` (TSV, "
                        f"{tsv.stat().st_size / 1e6:.0f} MB); VW text written from what "
                        "deltaps' reader yields from it, featurized by synthetic_spec_toml().")
    tsv.unlink()
    return out


def movielens(ctx) -> dict:
    """`deltaps train <movielens dir>` against `vw -d` on its VW text (same events, same order)."""
    directory = ctx.movielens
    if directory is None or not (Path(directory) / "u.data").is_file():
        return {"skipped": f"no MovieLens-100k at {directory} (pass --movielens DIR)"}
    limit = ctx.movielens_limit
    data, labels = _vw_text(ctx, "movielens", Path(directory), MOVIELENS_SPEC_TOML, "movielens",
                            limit)
    try:
        out = compare_cli(ctx, "movielens", Path(directory), data, labels,
                          ("--limit", str(limit)) if limit else ())
    finally:
        data.unlink(missing_ok=True)
    out["notes"].insert(0, f"{directory}"
                        + (f", first {limit:,d} ratings" if limit else "")
                        + ": deltaps with its default model; VW text from what deltaps' reader "
                        "yields, featurized by MOVIELENS_SPEC_TOML (user and item ids "
                        "categorical, 4 crosses as explicit pair features).")
    return out
