"""Secondary training benchmarks, on pre-parsed input (not what a user runs): deltaps' Trainer
fed in-memory batches through a real local cluster, side by side with Vowpal Wabbit.

What a user runs — the whole `deltaps train FILE` process against the whole `vw -d FILE` —
is the headline, in bench.usertrain; these sections (`planted_preparsed`,
`movielens_preparsed`) isolate the training loop from reading and parsing, and keep their
figure names (`planted.deltaps.b4096.*` ...), whose meaning is unchanged.

Why through the whole cluster: what a user gets is a worker talking to shard processes over
ZeroMQ (with write-ahead logs) while a replica follows the update stream, so that is what is
timed: `deploy.local.LocalCluster` (2 shards, 1 replica) and one in-process `Trainer`. Each
run gets a fresh cluster, so every progressive logloss starts from zero weights.

Events are read into memory and cut into the run's batch size first (untimed), so deltaps'
events/s is training alone, not generating, parsing or slicing; VW's from text includes
parsing its file, VW's from cache reads a pre-parsed binary file (the closer comparison). The same
in-memory events, in the same order, become VW's text (bench.vwtext, same featurization).

Speed is timed in interleaved rounds: round r is VW from text, deltaps at each batch size
(each on a fresh cluster), then VW from its cache. Why: this shared 2-core VM's speed drifts by
up to ±30% within a minute, so two programs timed minutes apart compare the machine's moods,
not the programs; within a round they are seconds apart. events/s is the median over rounds,
and every ratio to VW is the median of the per-round ratios (deltaps in round r over VW in
round r). Quality is taken from one round: a single worker learns the same weights every time
(worker.trainer), and every round's logloss and AUC are kept to show it.

Two sections:
- planted: the seeded Criteo-like stream (worker.sources.synthetic) at large batch sizes:
  throughput, and logloss against the Bayes-optimal floor the planted model gives (and how
  fast the stream itself is generated, untimed in the training figures); batch 4096 also with
  bounded delay 1 (`Setting`), to show what overlapping the shards' work with the worker's buys
  and what the staler gradients cost.
- movielens: MovieLens-100k at batch sizes 1..256: what mini-batching costs in quality
  (users rate in bursts, so stale weights within a batch hurt). One round only: its small
  batches take minutes a round, and its speed figures are context.

CPU: user+system seconds of every process over the training run (psutil, by the PIDs the
cluster owns; the worker is this process), scaled to 1M events, and their total, set against
VW's (its parser and learner threads): far less sensitive to the machine's drift than events/s.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import NamedTuple

import psutil

from bench import vw
from bench.report import HIGHER, LOWER, figure
from bench.processes import REPLICAS, SHARDS
from bench.training_report import (COLUMNS, deltaps_row, figures, measurement_notes, over_rounds,
                                   public, vw_rows)
from bench.vwtext import write_vw
from common.config import load_spec
from common.features import Batch
from deploy.admin import node_status
from deploy.local import LocalCluster
from worker.ps_client import PSClient
from worker.sources import (MOVIELENS_SPEC_TOML, ChunkCutter, MovieLensSource, SyntheticStream,
                            synthetic_spec_toml)
from worker.trainer import Trainer



class Setting(NamedTuple):
    """How one deltaps run trains: its batch size and bounded delay (`worker.trainer`)."""

    batch_size: int
    max_delay: int = 0

    @property
    def label(self) -> str:
        """b4096, or b4096.delay1 for a bounded-delay run: part of its figures' names."""
        return f"b{self.batch_size}" + (f".delay{self.max_delay}" if self.max_delay else "")


PLANTED_SETTINGS = (Setting(1024), Setting(4096), Setting(4096, max_delay=1))
MOVIELENS_SETTINGS = tuple(Setting(bs) for bs in (1, 8, 32, 256))
MOVIELENS_ROUNDS = 1  # its batch-1..32 runs take ~2 minutes a round; speed there is context
SEED = 0
CHUNK = 65536
PREPARSED = ("Pre-parsed input, not what a user runs: deltaps trains from batches already in "
             "memory while VW parses its file; the user's path is the planted / movielens "
             "section (bench.usertrain).")


class MemorySource:
    """Events held in memory, served in whatever batch sizes the trainer asks for (a slice).

    With `batch_size`, the events are cut into batches of that size up front (untimed), so a
    timed run measures training, not slicing columns (~0.5 ms a 4096-event batch here); a
    request for another size is sliced as it comes."""

    def __init__(self, chunks: list[Batch], batch_size: int | None = None):
        self._cutter = ChunkCutter((c, None) for c in chunks)
        self._ready: list[Batch] = []
        self._batch_size = batch_size
        if batch_size:
            while (got := self._cutter.read(batch_size)) is not None:
                self._ready.append(got[0])
            self._ready.reverse()

    def read(self, max_events: int) -> Batch | None:
        if self._ready and max_events == self._batch_size:
            return self._ready.pop()
        if self._ready:  # a different size after all: serve the rest by slicing
            self._cutter = ChunkCutter((c, None) for c in reversed(self._ready))
            self._ready = []
        got = self._cutter.read(max_events)
        return None if got is None else got[0]


def take(source, limit: int | None, chunk: int = CHUNK) -> list[Batch]:
    """A source's events (the first `limit`, or all) as a list of chunks."""
    out, seen = [], 0
    while limit is None or seen < limit:
        batch = source.read(chunk if limit is None else min(chunk, limit - seen))
        if batch is None:
            break
        seen += batch.n
        out.append(batch)
    return out


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


def train_deltaps(ctx, name: str, spec_text: str, model: str, chunks: list[Batch],
                  setting: Setting) -> dict:
    """One training run over `chunks` on a fresh cluster: summary and CPU per process."""
    batch_size = setting.batch_size
    cluster = LocalCluster(ctx.workdir / f"cluster-{name}", spec_text, SHARDS, REPLICAS)
    try:
        cluster.start_all()
        client = PSClient(cluster.cluster.shards(), max_bytes=cluster.spec.max_message_bytes)
        trainer = Trainer(client, cluster.spec, model, batch_size,
                          max_delay=setting.max_delay)
        pids = {f"{role}-{i}": p.pid for (role, i), p in cluster.procs.items()}
        me = psutil.Process()
        cpu0 = {k: _cpu(pid) for k, pid in pids.items()}
        me0 = me.cpu_times()
        summary = trainer.train(MemorySource(chunks, batch_size))
        me1 = me.cpu_times()
        catch_up = _wait_replica(cluster.address("replica", 0), model, trainer.last_seqs)
        cpu = {k: _cpu(pid) - cpu0[k] for k, pid in pids.items()}
        cpu["worker"] = (me1.user + me1.system) - (me0.user + me0.system)
        client.close()
    finally:
        codes = cluster.stop_all()
    shutil.rmtree(cluster.dir, ignore_errors=True)
    s = summary.as_dict()
    s.pop("last_seqs", None)
    m = cluster.spec.model(model)
    out = {**s, "batch_size": batch_size, "max_delay": setting.max_delay,
           "label": setting.label, "replica_catch_up_s": round(catch_up, 3),
           "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
           "cpu_s_per_1m_events": {k: round(v * 1e6 / max(summary.events, 1), 1)
                                   for k, v in cpu.items()},
           "config": {"shards": SHARDS, "replicas": REPLICAS, "workers": 1,
                      "batch_size": batch_size, "max_delay": setting.max_delay,
                      "model": model, "bits": m.bits,
                      "optimizer": vars(m.optimizer), "fsync": cluster.spec.fsync,
                      "publish_window_ms": cluster.spec.publish_window_ms},
           # an implementation detail, not a setting of the benchmark: kept out of "config"
           "trainer_pipeline": getattr(trainer, "pipeline", None)}
    bad = {f"{r}-{i}": c for (r, i), c in codes.items() if c != 0}
    if bad:
        out["nonzero_exit"] = bad
    ctx.log(f"  deltaps {name}: {summary.events:,d} events, {summary.events_per_s:,.0f} ev/s, "
            f"logloss {summary.logloss:.4f}, AUC {summary.auc:.4f}")
    return out


def vw_and_deltaps(ctx, name: str, chunks: list[Batch], spec_text: str, model: str,
                   parts: dict[Setting, list[Batch]], rounds: int
                   ) -> tuple[dict, dict[Setting, dict]]:
    """Every VW figure on `chunks`, and deltaps in each setting on its events (`parts`),
    timed in `rounds` interleaved rounds (see the module docstring); VW's text is written
    first, untimed."""
    spec = load_spec(text=spec_text)
    data = ctx.workdir / f"{name}.vw"
    t0 = time.perf_counter()
    events, labels = write_vw(chunks, spec.feature_spec(model), data)
    ctx.log(f"  VW text for {name}: {events:,d} events, {data.stat().st_size / 1e6:.0f} MB "
            f"in {time.perf_counter() - t0:.1f}s (untimed)")
    runs = {setting: [] for setting in parts}

    def deltaps_round(r: int) -> None:
        ctx.log(f"  round {r + 1} of {rounds}")
        for setting, part in parts.items():
            runs[setting].append(train_deltaps(ctx, f"{name}-{setting.label}", spec_text, model,
                                               part, setting))

    opt = spec.model(model).optimizer
    res = vw.benchmark(data, labels, ctx.workdir, rounds=rounds, between=deltaps_round,
                       grid=ctx.vw_grid, same_as={"alpha": opt.learning_rate, "beta": opt.beta,
                                                  "l1": opt.l1, "l2": opt.l2})
    res["text_mb"] = round(data.stat().st_size / 1e6, 1)
    data.unlink()
    d, c = res["default_text"], res["default_cache"]
    ctx.log(f"  VW {name}: {d['events_per_s']:,.0f} ev/s from text {d['all_events_per_s']}, "
            f"{c['events_per_s']:,.0f} from cache {c['all_events_per_s']}; logloss default "
            f"{d['logloss']:.4f}, same settings {res['same_hparams']['logloss']:.4f}, best of "
            f"grid {res['best_of_grid']['logloss']:.4f}")
    return res, {setting: over_rounds(rs, res) for setting, rs in runs.items()}


def planted(ctx) -> dict:
    """deltaps vs VW on the planted stream: throughput at large batches, logloss vs the floor."""
    n = ctx.events
    stream = SyntheticStream(n, SEED)
    t0 = time.perf_counter()
    chunks = take(stream, None)
    generated_per_s = n / (time.perf_counter() - t0)
    ctx.log(f"  generated {n:,d} planted events at {generated_per_s:,.0f} events/s")
    bayes = stream.bayes_logloss
    vw_res, runs = vw_and_deltaps(ctx, "planted", chunks, synthetic_spec_toml(), "ctr",
                                  {s: chunks for s in ctx.planted_settings}, ctx.repeats)
    rows = [deltaps_row(r, vw_res) for r in runs.values()] + vw_rows(vw_res, n)
    rows.append(["Bayes-optimal (the planted model itself)", "", n, "", "", bayes] + [""] * 8)
    stream_cfg = {"stream": f"synthetic:{n}:{SEED}", "events": n}
    figs = figures("planted", runs, vw_res)
    figs.append(figure("planted.bayes_logloss", bayes, "nats", None, stream_cfg))
    figs.append(figure("planted.stream.generated_events_per_s", round(generated_per_s),
                       "events/s", HIGHER, {**stream_cfg, "chunk": CHUNK}))
    figs += [figure(f"planted.deltaps.{s.label}.excess_over_bayes",
                    round(r["logloss"] - bayes, 5), "nats", LOWER, stream_cfg, band=0.1)
             for s, r in runs.items()]
    notes = [PREPARSED,
             f"Stream synthetic:{n}:{SEED} (worker.sources.synthetic), model spec "
             "synthetic_spec_toml() (FTRL alpha 0.05, beta 1, 22 bits); events served from "
             "memory to deltaps, from a text file or VW's cache to VW.",
             f"Generating the stream (reading it in {CHUNK:,d}-event chunks, untimed in the "
             f"training figures): {generated_per_s:,.0f} events/s."] + measurement_notes(vw_res, runs)
    return {"figures": figs, "table": {"columns": COLUMNS, "rows": rows}, "notes": notes,
            "details": {"vw": public(vw_res),
                        "deltaps": {k.label: v for k, v in runs.items()}}}


def movielens(ctx) -> dict:
    """deltaps vs VW on MovieLens-100k: what mini-batching costs in progressive quality."""
    directory = ctx.movielens
    if directory is None or not (Path(directory) / "u.data").is_file():
        return {"skipped": f"no MovieLens-100k at {directory} (pass --movielens DIR)"}
    chunks = take(MovieLensSource(directory), ctx.movielens_limit)
    events = sum(c.n for c in chunks)
    parts = {}
    for setting in ctx.movielens_settings:
        cap = ctx.movielens_caps.get(setting.batch_size)
        parts[setting] = take(MemorySource(chunks), cap) if cap and cap < events else chunks
    vw_res, runs = vw_and_deltaps(ctx, "movielens", chunks, MOVIELENS_SPEC_TOML, "movielens",
                                  parts, MOVIELENS_ROUNDS)
    rows = [deltaps_row(r, vw_res) for r in runs.values()] + vw_rows(vw_res, events)
    notes = [PREPARSED, f"{directory}: {events:,d} ratings in timestamp order, label rating >= 4, spec "
             "MOVIELENS_SPEC_TOML (FTRL alpha 0.2, beta 1, l2 1; 4 crosses, written out for VW "
             "as explicit pair features)."] + measurement_notes(vw_res, runs)
    capped = {s.batch_size: r["events"] for s, r in runs.items() if r["events"] < events}
    if capped:
        notes.append("Runs on a prefix only, to bound the time (compare their logloss with "
                     "VW's on the same prefix, not with the other rows): "
                     + ", ".join(f"batch {bs}: first {n:,d} events" for bs, n in capped.items()))
    return {"figures": figures("movielens", runs, vw_res),
            "table": {"columns": COLUMNS, "rows": rows}, "notes": notes,
            "details": {"vw": public(vw_res),
                        "deltaps": {k.label: v for k, v in runs.items()}}}
