"""`python -m bench.run`: run the benchmark sections, write JSON + markdown, print the tables.

Why sections: each is a function ``ctx -> dict`` (figures, table, notes, details) listed in
SECTIONS, so a new benchmark is one function and one line here, and `--only NAME` runs one.
Everything scratch (VW text files, cluster directories) lives in a temporary directory that is
removed at the end; results go to `--out` (bench/results/ by default, git-ignored).
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click

from bench import (adaptive, curve, deep, durability, footprint, freshness, machine, network,
                   readers, reads, report, streams, training, usertrain, vw, workers)
from deploy.runtime.allocator import keep_message_buffers_on_heap

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MOVIELENS = REPO.parent / "shared" / "data" / "movielens-100k"
DEFAULT_OUT = REPO / "bench" / "results"

SECTIONS: dict[str, Callable[["Context"], dict]] = {
    "planted": usertrain.planted,  # the whole `deltaps train FILE` vs the whole `vw -d FILE`
    "movielens": usertrain.movielens,
    "workers": workers.run,  # two workers on one stream against one
    "planted_preparsed": training.planted,  # secondary: pre-parsed input, not what a user runs
    "movielens_preparsed": training.movielens,
    "adaptive": adaptive.run,
    "freshness": freshness.run,
    "reads": reads.run,
    "durability": durability.run,
    "curve": curve.run,  # CurveZMQ's cost against plain TCP
    "footprint": footprint.run,
    "readers": readers.run,
    "deep": deep.run,  # the deep sparse model: cluster vs Keras, vs linear and Bayes, reads
    "streams": streams.run,  # Redis Streams against a file; XADD -> readable on every replica
    "network": network.run,  # nodes in network namespaces: slow links, a partitioned shard
}


@dataclass
class Context:
    """What every section may use: sizes, inputs, a scratch directory, a logger."""

    events: int
    movielens: Path | None
    workdir: Path
    quick: bool = False
    movielens_limit: int | None = None
    repeats: int = 3  # speed rounds: VW and deltaps timed in alternation (bench.training)
    cli_rounds: int = 5  # rounds of whole processes, deltaps then VW (bench.usertrain)
    vw_grid: dict = field(default_factory=lambda: dict(vw.GRID))
    planted_settings: tuple = training.PLANTED_SETTINGS
    movielens_settings: tuple = training.MOVIELENS_SETTINGS
    movielens_caps: dict = field(default_factory=dict)  # batch size -> at most this many events

    def log(self, msg: str) -> None:
        click.echo(msg, err=True)


@click.command()
@click.option("--events", type=click.IntRange(1), default=None,
              help="Planted-stream events [default: 1,000,000; 50,000 with --quick].")
@click.option("--movielens", "movielens", type=click.Path(path_type=Path), default=None,
              help=f"MovieLens-100k directory [default: {DEFAULT_MOVIELENS}].")
@click.option("--out", "out", type=click.Path(path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Where results are written.")
@click.option("--only", type=click.Choice(sorted(SECTIONS)), multiple=True,
              help="Run only this section (repeatable).")
@click.option("--movielens-cap", "caps", multiple=True, metavar="BATCH=EVENTS",
              help="Train MovieLens at batch size BATCH on its first EVENTS events only (batch 1 "
                   "runs ~250 events/s: about 7 minutes for all 100k). Repeatable.")
@click.option("--quick", is_flag=True,
              help="Small and fast: 50k planted events, 20k MovieLens events (5k at batch "
                   "size 1), 3 rounds of whole processes and 1 pre-parsed speed round, "
                   "smaller VW grids.")
def main(events, movielens, out, only, caps, quick):
    """Benchmark deltaps (a real local cluster) against Vowpal Wabbit on the same events."""
    keep_message_buffers_on_heap()  # this process trains as `deltaps train` would
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    info = machine.describe()
    load = machine.LoadSampler()
    load.sample("start")
    movielens = movielens or DEFAULT_MOVIELENS
    workdir = Path(tempfile.mkdtemp(prefix="deltaps-bench-"))
    ctx = Context(events=events or (50_000 if quick else 1_000_000),
                  movielens=movielens if (movielens / "u.data").is_file() else None,
                  workdir=workdir, quick=quick, movielens_limit=20_000 if quick else None,
                  repeats=1 if quick else 3, cli_rounds=3 if quick else 5,
                  vw_grid=dict(vw.QUICK_GRID if quick else vw.GRID),
                  movielens_caps={1: 5_000} if quick else {})
    ctx.movielens_caps.update(_caps(caps))
    if ctx.movielens is None:
        ctx.log(f"note: no MovieLens-100k at {movielens}; its section is skipped")
    result = {"started": started, "command": "python -m bench.run " + shlex.join(sys.argv[1:]),
              "options": {"events": ctx.events, "movielens": str(movielens), "quick": quick,
                          "movielens_limit": ctx.movielens_limit, "vw_repeats": ctx.repeats,
                          "cli_rounds": ctx.cli_rounds,
                          "movielens_caps": ctx.movielens_caps,
                          "only": list(only)},
              "machine": info, "sections": {}}
    failed = False
    try:
        for name, section in SECTIONS.items():
            if only and name not in only:
                continue
            ctx.log(f"[{name}]")
            # what the sections before wrote (files of up to a GB) is written back now, not by
            # the kernel's flusher threads on the CPUs this section measures
            os.sync()
            t0 = time.monotonic()
            try:
                out_section = section(ctx)
            except Exception as exc:  # a failed section is reported, the others still run
                failed = True
                ctx.log(traceback.format_exc())
                out_section = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
            out_section["seconds"] = round(time.monotonic() - t0, 1)
            result["sections"][name] = out_section
            load.sample(name)
            ctx.log(f"[{name}] {out_section['seconds']:.0f}s, load {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_after"] = list(os.getloadavg())
    info["load_samples"] = load.samples
    json_path, md_path = report.write(result, out)
    click.echo(report.markdown_report(result))
    click.echo(f"wrote {json_path} and {md_path}", err=True)
    sys.exit(1 if failed else 0)


def _caps(values: tuple[str, ...]) -> dict[int, int]:
    out = {}
    for v in values:
        batch, sep, events = v.partition("=")
        if not (sep and batch.isdigit() and events.isdigit()):
            raise click.BadParameter(f"{v!r}: expected BATCH=EVENTS, e.g. 1=20000",
                                     param_hint="--movielens-cap")
        out[int(batch)] = int(events)
    return out


if __name__ == "__main__":
    main()
