"""Readers alone: events/s of each file format's source on the same planted events, one core.

Why its own section: `deltaps train FILE` can go no faster than its reader, so the reader is
timed without a cluster: the planted stream written as a Criteo-layout TSV, as JSON lines,
as VW text (`bench.vwtext`, the model's default featurization) and as libsvm (numeric fields
as ``k:value``, categorical ids one-hot), then each file read to the end by `open_source` in
batches of 4096. Time is this process's CPU time (pyarrow is asked for one thread and numpy
uses one), so the figure is per core and less exposed to other load on the machine.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.report import HIGHER, figure
from bench.vwtext import write_vw
from common.features import NUMERIC, Batch, FeatureSpec
from worker.sources import SyntheticStream, open_source, write_synthetic
from worker.sources.planted import FIELDS

SEED = 7
BATCH = 4096
_CAT_STRIDE = 10 ** 8  # libsvm index of categorical field k's id v: 14 + k * stride + v


def libsvm_text(batch: Batch) -> str:
    """libsvm lines of a planted batch: ``label j:value`` for numeric field j (1-13), and
    ``index:1`` per categorical id, indices past the numeric ones."""
    labels = np.where(batch.labels > 0, "1", "-1").astype(object)
    parts = [(np.arange(batch.n), np.char.add("\n", labels.astype(str)))]
    for j, name in enumerate(FIELDS):
        col = batch.columns[name]
        if col.kind == NUMERIC:
            text = np.char.add(f" {j + 1}:", col.values.astype(np.int64).astype(str))
        else:
            index = 14 + j * _CAT_STRIDE + col.values.astype(np.int64)
            text = np.char.add(np.char.add(" ", index.astype(str)), ":1")
        parts.append((col.rows, text))
    keys = np.concatenate([2 * rows + (i > 0) for i, (rows, _t) in enumerate(parts)])
    tokens = np.concatenate([t.astype(object) for _r, t in parts])
    return "".join(tokens[np.argsort(keys, kind="stable")].tolist())[1:] + "\n"


def write_files(workdir: Path, events: int) -> dict[str, Path]:
    files = {"tsv": write_synthetic(workdir / "planted.tsv", events, SEED),
             "jsonl": write_synthetic(workdir / "planted.jsonl", events, SEED, fmt="jsonl")}
    stream = SyntheticStream(events, SEED)
    write_vw(stream.batches(stream.chunk_size), FeatureSpec(), workdir / "planted.vw")
    files["vw"] = workdir / "planted.vw"
    stream = SyntheticStream(events, SEED)
    with open(workdir / "planted.svm", "w", encoding="utf-8") as out:
        for batch in stream.batches(stream.chunk_size):
            out.write(libsvm_text(batch))
    files["libsvm"] = workdir / "planted.svm"
    return files


def read_seconds(path: Path) -> tuple[int, float, float]:
    """(events, CPU seconds, wall seconds) to read a file to the end."""
    c0, t0 = time.process_time(), time.perf_counter()
    source = open_source(str(path))
    n = 0
    while (batch := source.read(BATCH)) is not None:
        n += batch.n
    source.close()
    return n, time.process_time() - c0, time.perf_counter() - t0


def run(ctx) -> dict:
    files = write_files(ctx.workdir, ctx.events)
    try:
        rows, figures = _read_all(ctx, files)
    finally:  # a GB of files, which no later section reads
        for path in files.values():
            path.unlink(missing_ok=True)
    return {"figures": figures,
            "table": {"columns": ["format", "events", "MB", "CPU s", "events/s"], "rows": rows},
            "notes": [f"open_source(FILE).read({BATCH}) to the end; CPU time of this process "
                      "(one core); best of the rounds"]}


def _read_all(ctx, files: dict[str, Path]) -> tuple[list, list]:
    rows, figures = [], []
    for fmt, path in files.items():
        best = None
        for _ in range(1 if ctx.quick else 2):
            n, cpu, wall = read_seconds(path)
            best = (n, cpu, wall) if best is None or cpu < best[1] else best
        n, cpu, wall = best
        mb = path.stat().st_size / 1e6
        ctx.log(f"  {fmt:6s} {n:,d} events {mb:.0f} MB: {cpu:.2f} s CPU ({n / cpu:,.0f} ev/s), "
                f"{wall:.2f} s wall")
        rows.append([fmt, n, round(mb, 1), round(cpu, 2), round(n / cpu)])
        figures.append(figure(f"reader_{fmt}_events_per_cpu_s", round(n / cpu), "ev/s", HIGHER,
                              {"events": n, "batch": BATCH}))
    return rows, figures
