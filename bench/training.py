"""Training benchmarks: deltaps through a real local cluster, side by side with Vowpal Wabbit.

Why through the whole cluster: what a user gets is a worker talking to shard processes over
ZeroMQ (with write-ahead logs) while a replica follows the update stream, so that is what is
timed: `deploy.local.LocalCluster` (2 shards, 1 replica) and one in-process `Trainer`. Each
run gets a fresh cluster, so every progressive logloss starts from zero weights.

Two sections:
- planted: the seeded Criteo-like stream (worker.synthetic) at large batch sizes: throughput,
  and logloss against the Bayes-optimal floor the planted model gives.
- movielens: MovieLens-100k at batch sizes 1..256: what mini-batching costs in quality
  (users rate in bursts, so stale weights within a batch hurt).
VW sees the same events in the same order, featurized by the same spec (bench.vwtext).

CPU: user+system seconds of every process over the training run (psutil, by the PIDs the
cluster owns), scaled to 1M events. The worker's includes producing the events (the planted
stream is generated on the fly; `source_s` says how long that took).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil

from bench import vw
from bench.report import HIGHER, LOWER, figure
from common.config import load_spec
from common.features import Batch
from deploy.admin import node_status
from deploy.local import LocalCluster
from bench.vwtext import write_vw
from worker.ps_client import PSClient
from worker.sources import MOVIELENS_SPEC_TOML, MovieLensSource
from worker.synthetic import SyntheticStream, synthetic_spec_toml
from worker.trainer import Trainer

SHARDS, REPLICAS = 2, 1
PLANTED_BATCHES = (1024, 4096)
MOVIELENS_BATCHES = (1, 8, 32, 256)
SEED = 0


class TimedSource:
    """Wraps a source to add up the time spent producing events (not training on them)."""

    def __init__(self, source, limit: int | None = None):
        self.source, self.limit = source, limit
        self.seconds = 0.0
        self.stats = getattr(source, "stats", None)

    def read(self, max_events: int) -> Batch | None:
        t0 = time.perf_counter()
        batch = self.source.read(max_events)
        self.seconds += time.perf_counter() - t0
        return batch


def take(source, limit: int | None, chunk: int = 65536) -> Iterator[Batch]:
    """Batches of a source up to `limit` events (all of them if None)."""
    seen = 0
    while limit is None or seen < limit:
        batch = source.read(chunk if limit is None else min(chunk, limit - seen))
        if batch is None:
            return
        seen += batch.n
        yield batch


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _wait_replica(address: str, model: str, seqs: dict, timeout: float = 60.0) -> float:
    """Seconds until the replica has applied every update up to `seqs` ({shard: seq})."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = node_status(address, timeout=1.0)
        if st and model in st.get("models", {}):
            m = st["models"][model]
            if m.get("ready") and all(m["version"][int(k)] >= s for k, s in seqs.items()):
                return time.monotonic() - t0
        time.sleep(0.02)
    return float("nan")


def train_deltaps(ctx, name: str, spec_text: str, model: str, make_source: Callable,
                  batch_size: int, limit: int | None = None) -> dict:
    """One training run on a fresh cluster; summary, timing split and CPU per process."""
    cluster = LocalCluster(ctx.workdir / f"cluster-{name}", spec_text, SHARDS, REPLICAS)
    try:
        cluster.start_all()
        client = PSClient(cluster.cluster.shards(), max_bytes=cluster.spec.max_message_bytes)
        trainer = Trainer(client, cluster.spec, model, batch_size)
        source = make_source()
        timed = TimedSource(source)
        pids = {f"{role}-{i}": p.pid for (role, i), p in cluster.procs.items()}
        me = psutil.Process()
        cpu0 = {k: _cpu(pid) for k, pid in pids.items()}
        me0 = me.cpu_times()
        summary = trainer.train(timed, limit)
        me1 = me.cpu_times()
        catch_up = _wait_replica(cluster.address("replica", 0), model, trainer.last_seqs)
        cpu = {k: _cpu(pid) - cpu0[k] for k, pid in pids.items()}
        cpu["worker"] = (me1.user + me1.system) - (me0.user + me0.system)
        client.close()
    finally:
        codes = cluster.stop_all()
    bad = {f"{r}-{i}": c for (r, i), c in codes.items() if c != 0}
    shutil.rmtree(cluster.dir, ignore_errors=True)
    s = summary.as_dict()
    s.pop("last_seqs", None)
    train_s = summary.seconds - timed.seconds
    out = {**s, "batch_size": batch_size, "source_s": round(timed.seconds, 3),
           "events_per_s_excl_source": round(summary.events / train_s, 1) if train_s > 0 else 0,
           "replica_catch_up_s": round(catch_up, 3),
           "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
           "cpu_s_per_1m_events": {k: round(v * 1e6 / max(summary.events, 1), 2)
                                   for k, v in cpu.items()},
           "config": {"shards": SHARDS, "replicas": REPLICAS, "batch_size": batch_size,
                      "model": model, "fsync": cluster.spec.fsync,
                      "publish_window_ms": cluster.spec.publish_window_ms,
                      "optimizer": vars(cluster.spec.model(model).optimizer),
                      "bits": cluster.spec.model(model).bits, "limit": limit}}
    if bad:
        out["nonzero_exit"] = bad
    if hasattr(source, "bayes_logloss"):
        out["bayes_logloss"] = source.bayes_logloss
    ctx.log(f"  deltaps {name}: {summary.events:,d} events, {summary.events_per_s:,.0f} ev/s "
            f"({out['events_per_s_excl_source']:,.0f} excl. source), logloss "
            f"{summary.logloss:.4f}, AUC {summary.auc:.4f}")
    return out


def vw_on(ctx, name: str, batches: Iterator[Batch], spec, model: str) -> dict:
    """Write the events as VW text (untimed) and run every VW figure on them."""
    data = ctx.workdir / f"{name}.vw"
    t0 = time.perf_counter()
    events, labels = write_vw(batches, spec.feature_spec(model), data)
    ctx.log(f"  VW text for {name}: {events:,d} events, {data.stat().st_size / 1e6:.0f} MB "
            f"in {time.perf_counter() - t0:.1f}s (untimed)")
    opt = spec.model(model).optimizer
    res = vw.benchmark(data, labels, ctx.workdir, repeats=ctx.repeats, grid=ctx.vw_grid,
                       same_as={"alpha": opt.learning_rate, "beta": opt.beta, "l1": opt.l1,
                                "l2": opt.l2})
    res["text_mb"] = round(data.stat().st_size / 1e6, 1)
    data.unlink()
    d = res["default_text"]
    ctx.log(f"  VW {name}: {d['events_per_s']:,.0f} ev/s from text, "
            f"{res['default_cache']['events_per_s']:,.0f} from cache; logloss default "
            f"{d['logloss']:.4f}, same hparams {res['same_hparams']['logloss']:.4f}, best of "
            f"grid {res['best_of_grid']['logloss']:.4f}")
    return res


def _vw_rows(res: dict, events: int) -> list[list]:
    d, c, same, best = (res["default_text"], res["default_cache"], res["same_hparams"],
                        res["best_of_grid"])
    alpha, beta = res["defaults"].get("ftrl_alpha"), res["defaults"].get("ftrl_beta")
    cpu = lambda r: round(r["cpu_seconds"] * 1e6 / events, 2)  # noqa: E731
    return [
        [f"VW default (alpha {alpha:g}, beta {beta:g}), text", 1, events, d["events_per_s"],
         d["logloss"], d["auc"], "", "", 1.0, f"{cpu(d)} (vw)"],
        ["VW default, from cache", 1, events, c["events_per_s"], c["logloss"], c["auc"], "", "",
         round(c["events_per_s"] / d["events_per_s"], 3), f"{cpu(c)} (vw)"],
        [f"VW with deltaps' FTRL settings{_hp(same)}", 1, events, "", same["logloss"],
         same["auc"], "", "", "", ""],
        [f"VW best of {len(res['grid'])}-point grid{_hp(best)} (tuned on this stream)", 1, events,
         "", best["logloss"], best["auc"], "", "", "", ""],
    ]


def _hp(r: dict) -> str:
    args = r["command"].split()
    pick = {k: args[args.index(k) + 1] for k in ("--ftrl_alpha", "--ftrl_beta", "--l2")
            if k in args}
    return " (" + ", ".join(f"{k.lstrip('-').replace('ftrl_', '')} {v}" for k, v in
                            pick.items()) + ")"


def _deltaps_row(label: str, r: dict, vw_res: dict) -> list:
    vw_text = vw_res["default_text"]
    vw_same = vw.on_prefix(vw_res, r["events"])
    cpu = r["cpu_s_per_1m_events"]
    cpu_text = ", ".join(f"{cpu[k]:g} {k}" for k in sorted(cpu))
    return [label, r["batch_size"], r["events"], r["events_per_s"], r["logloss"], r["auc"],
            round(r["logloss"] - vw_same["default"]["logloss"], 4),
            round(r["logloss"] - vw_same["same_hparams"]["logloss"], 4),
            round(r["events_per_s_excl_source"] / vw_text["events_per_s"], 3), cpu_text]


COLUMNS = ["run", "batch", "events", "events/s", "logloss", "AUC", "logloss - VW default",
           "logloss - VW same settings", "speed / VW text (excl. source)", "CPU s per 1M events"]


def _figures(prefix: str, runs: dict[int, dict], vw_res: dict, events: int) -> list[dict]:
    figs = []
    d, c = vw_res["default_text"], vw_res["default_cache"]
    best, same = vw_res["best_of_grid"], vw_res["same_hparams"]
    at = {r["events"]: vw.on_prefix(vw_res, r["events"]) for r in runs.values()}
    cfg = lambda r: {"command": r["command"]}  # noqa: E731
    figs += [figure(f"{prefix}.vw.text.events_per_s", d["events_per_s"], "events/s", HIGHER,
                    cfg(d), reference=True),
             figure(f"{prefix}.vw.cache.events_per_s", c["events_per_s"], "events/s", HIGHER,
                    cfg(c), reference=True),
             figure(f"{prefix}.vw.default.logloss", d["logloss"], "nats", LOWER, cfg(d),
                    reference=True, band=0.01),
             figure(f"{prefix}.vw.default.auc", d["auc"], "", HIGHER, cfg(d), reference=True,
                    band=0.01),
             figure(f"{prefix}.vw.same_hparams.logloss", same["logloss"], "nats", LOWER,
                    cfg(same), reference=True, band=0.01),
             figure(f"{prefix}.vw.best_of_grid.logloss", best["logloss"], "nats", LOWER,
                    cfg(best), reference=True, band=0.01)]
    for bs, r in runs.items():
        p = f"{prefix}.deltaps.b{bs}"
        conf = {"command": "bench.training.train_deltaps", **r["config"]}
        figs += [figure(f"{p}.events_per_s", r["events_per_s"], "events/s", HIGHER, conf),
                 figure(f"{p}.events_per_s_excl_source", r["events_per_s_excl_source"],
                        "events/s", HIGHER, conf),
                 figure(f"{p}.logloss", r["logloss"], "nats", LOWER, conf, band=0.01),
                 figure(f"{p}.auc", r["auc"], "", HIGHER, conf, band=0.01),
                 figure(f"{p}.speed_vs_vw_text", round(r["events_per_s_excl_source"]
                                                       / d["events_per_s"], 4), "x", HIGHER,
                        conf),
                 figure(f"{p}.logloss_minus_vw_default",
                        round(r["logloss"] - at[r["events"]]["default"]["logloss"], 5),
                        "nats", None, conf),
                 figure(f"{p}.logloss_minus_vw_same_hparams",
                        round(r["logloss"] - at[r["events"]]["same_hparams"]["logloss"], 5),
                        "nats", None, conf)]
        for proc, v in r["cpu_s_per_1m_events"].items():
            figs.append(figure(f"{p}.cpu_s_per_1m.{proc}", v, "cpu s", LOWER, conf))
    return figs


def planted(ctx) -> dict:
    """deltaps vs VW on the planted stream: throughput at large batches, logloss vs the floor."""
    n = ctx.events
    spec_text = synthetic_spec_toml()
    spec = load_spec(text=spec_text)
    vw_res = vw_on(ctx, "planted", SyntheticStream(n, SEED).batches(65536), spec, "ctr")
    runs = {}
    for bs in ctx.planted_batches:
        runs[bs] = train_deltaps(ctx, f"planted-b{bs}", spec_text, "ctr",
                                 lambda: SyntheticStream(n, SEED), bs)
    bayes = next(iter(runs.values()))["bayes_logloss"]
    rows = [_deltaps_row("deltaps (2 shards, 1 replica, 1 worker)", r, vw_res)
            for r in runs.values()]
    rows += _vw_rows(vw_res, n)
    rows.append(["Bayes-optimal (planted model)", "", n, "", bayes, "", "", "", "", ""])
    figs = _figures("planted", runs, vw_res, n)
    figs.append(figure("planted.bayes_logloss", bayes, "nats", None,
                       {"stream": f"synthetic:{n}:{SEED}"}))
    for bs, r in runs.items():
        figs.append(figure(f"planted.deltaps.b{bs}.excess_over_bayes",
                           round(r["logloss"] - bayes, 5), "nats", LOWER,
                           {"stream": f"synthetic:{n}:{SEED}"}, band=0.1))
    gen = ", ".join(f"{r['source_s']:.1f}s at batch {bs}" for bs, r in runs.items())
    notes = [f"stream synthetic:{n}:{SEED} (worker.synthetic), spec synthetic_spec_toml(); "
             f"deltaps events/s includes generating the events on the fly ({gen}); the speed "
             "ratio excludes it. VW's time includes parsing its text file.",
             _same_check(vw_res)]
    return {"figures": figs, "table": {"columns": COLUMNS, "rows": rows}, "notes": notes,
            "details": {"vw": _public(vw_res), "deltaps": {str(k): v for k, v in runs.items()}}}


def movielens(ctx) -> dict:
    """deltaps vs VW on MovieLens-100k: what mini-batching costs in progressive quality."""
    directory = ctx.movielens
    if directory is None or not (Path(directory) / "u.data").is_file():
        return {"skipped": f"no MovieLens-100k at {directory} (pass --movielens DIR)"}
    spec = load_spec(text=MOVIELENS_SPEC_TOML)
    limit = ctx.movielens_limit
    vw_res = vw_on(ctx, "movielens", take(MovieLensSource(directory), limit), spec, "movielens")
    events = vw_res["default_text"]["events"]
    runs = {}
    for bs in ctx.movielens_batches:
        runs[bs] = train_deltaps(ctx, f"movielens-b{bs}", MOVIELENS_SPEC_TOML, "movielens",
                                 lambda: MovieLensSource(directory), bs, limit)
    rows = [_deltaps_row("deltaps (2 shards, 1 replica, 1 worker)", r, vw_res)
            for r in runs.values()]
    rows += _vw_rows(vw_res, events)
    notes = [f"{directory}, {events:,d} events in timestamp order, label rating >= 4, spec "
             "MOVIELENS_SPEC_TOML (4 crosses, written out for VW as explicit pair features).",
             "VW learns one event at a time (batch 1); deltaps scores a whole batch with the "
             "weights pulled before it.", _same_check(vw_res)]
    return {"figures": _figures("movielens", runs, vw_res, events),
            "table": {"columns": COLUMNS, "rows": rows}, "notes": notes,
            "details": {"vw": _public(vw_res), "deltaps": {str(k): v for k, v in runs.items()}}}


def _public(vw_res: dict) -> dict:
    return {k: v for k, v in vw_res.items() if not k.startswith("_")}


def _same_check(vw_res: dict) -> str:
    ok = vw_res["default_cache"]["same_predictions_as_text"]
    return ("VW from cache made the same predictions as from text." if ok else
            "WARNING: VW from cache made different predictions than from text.")
