"""Vowpal Wabbit on the same events, as its command line runs them: our quality and speed yardstick.

Why in-process through `vowpalwabbit.Workspace` with ``-d FILE``: the constructor then runs
VW's own parser and learner threads over the file (what the ``vw`` binary does), so the time
is command-line speed, not the ~5x slower per-example Python binding. Timed: constructor +
``finish()``; CPU: this process's CPU time over that span (VW's threads included).

Quality is progressive: VW writes each prediction (``-p``, a probability with ``--link
logistic``) before learning from the example, exactly like deltaps' progressive validation,
so logloss and AUC come from the predictions file and the same labels, with the same formulas
(`common.linear.logloss`, `worker.metrics.auc`).

Runs: writing the cache; then `rounds` speed rounds, each the default FTRL from text, the
caller's own timed runs (`between`), then the same from the cache (all without -p; medians over
rounds, and every round's figures for per-round ratios); the default FTRL once more from text
and from the cache with -p for quality (the cache's predictions must equal the text run's);
FTRL with deltaps' hyper-parameters (the same learner, online: the gap to deltaps is what
mini-batching and hashing cost); and a small grid read from the cache, ranked by VW's own
progressive loss, whose best is labeled as tuned on the evaluation stream itself (an
optimistic figure).
"""
from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from common.linear import logloss
from worker.metrics import auc

BASE_ARGS = ("--ftrl", "-b", "22", "--loss_function", "logistic", "--link", "logistic", "--quiet")
# VW 9.11's --ftrl defaults are alpha 0.5, beta 1 (read back from its log by `defaults`); the
# grid spans them, deltaps' own settings and the usual small values. (l2 = 1e-6 was tried and
# gave the same logloss as 0 to 5 digits on both streams, so it is not worth its runs.)
GRID = {"ftrl_alpha": (0.005, 0.05, 0.1, 0.2, 0.5), "ftrl_beta": (0.1, 1.0), "l2": (0.0, 1.0)}
QUICK_GRID = {"ftrl_alpha": (0.05, 0.2, 0.5), "ftrl_beta": (0.1, 1.0), "l2": (0.0, 1.0)}


def command(args: list[str]) -> str:
    """The equivalent `vw` command line (what a reader would run to reproduce a figure)."""
    return "vw " + " ".join(args)


def run(data: Path, *, preds: Path | None = None, cache: Path | None = None,
        extra: tuple[str, ...] = ()) -> dict:
    """One VW pass over `data` (or its cache); wall and CPU seconds, and the args used."""
    from vowpalwabbit import Workspace

    args = list(BASE_ARGS) + list(extra) + ["-d", str(data)]
    if cache is not None:
        args += ["--cache_file", str(cache)]
    if preds is not None:
        args += ["-p", str(preds)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    ws = Workspace(arg_list=args)  # -d: runs the native parser + learner over the whole file
    # VW's own progressive loss: with these flags, mean logistic loss in nats = our logloss
    # (checked against the -p predictions in `benchmark`).
    sum_loss, weighted = ws.get_sum_loss(), ws.get_weighted_examples()
    ws.finish()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"command": command(args), "seconds": round(seconds, 4), "cpu_seconds": round(cpu, 4),
            "vw_logloss": sum_loss / weighted if weighted else float("nan")}


def defaults(data: Path, lines: int = 10) -> dict:
    """VW's effective FTRL settings when none are given, read from its log on a few lines."""
    from vowpalwabbit import Workspace

    head = data.with_suffix(".head")
    with open(data, encoding="utf-8") as f, open(head, "w", encoding="utf-8") as out:
        out.writelines(itertools.islice(f, lines))
    ws = Workspace(arg_list=[a for a in BASE_ARGS if a != "--quiet"] + ["-d", str(head)],
                   enable_logging=True)
    ws.finish()
    head.unlink()
    found = {}
    for line in ws.get_log():
        key, sep, value = line.partition(" = ")
        if sep and key.strip() in ("ftrl_alpha", "ftrl_beta"):
            found[key.strip()] = float(value)
    return found


def read_predictions(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        return np.array(f.read().split(), dtype=np.float64)


def quality(preds: np.ndarray, labels: np.ndarray) -> dict:
    if preds.size != labels.size:
        raise RuntimeError(f"VW made {preds.size} predictions for {labels.size} events")
    return {"logloss": float(logloss(preds, labels).mean()), "auc": auc(preds, labels)}


def on_prefix(res: dict, events: int) -> dict:
    """VW's default and same-settings quality on the first `events` events of its stream."""
    p = res["_predictions"]
    return {k: quality(p[k][:events], p["labels"][:events]) for k in ("default", "same_hparams")}


def ftrl_args(alpha: float, beta: float, l1: float = 0.0, l2: float = 0.0) -> tuple[str, ...]:
    return ("--ftrl_alpha", repr(alpha), "--ftrl_beta", repr(beta), "--l1", repr(l1),
            "--l2", repr(l2))


def benchmark(data: Path, labels: np.ndarray, workdir: Path, *, same_as: dict,
              rounds: int = 1, between: Callable[[int], None] = lambda r: None,
              grid: dict = GRID) -> dict:
    """Every VW figure for one VW text file; `same_as` = deltaps' FTRL alpha/beta/l1/l2.

    `between(r)` runs in the middle of speed round r (after VW from text, before VW from the
    cache): the caller times its own runs there, so that they and VW's alternate and a ratio
    of round r's timings compares runs seconds apart on a machine whose speed drifts."""
    events = int(labels.size)
    preds, cache = workdir / "vw.preds", workdir / "vw.cache"

    def speed(runs: list[dict]) -> dict:
        secs = statistics.median(r["seconds"] for r in runs)
        return {"command": runs[0]["command"], "seconds": secs, "all_seconds":
                [r["seconds"] for r in runs], "cpu_seconds": statistics.median(
                    r["cpu_seconds"] for r in runs), "all_cpu_seconds":
                [r["cpu_seconds"] for r in runs], "events": events,
                "events_per_s": round(events / secs, 1), "all_events_per_s":
                [round(events / r["seconds"], 1) for r in runs]}

    out = {"defaults": defaults(data), "version": _version()}
    cache.unlink(missing_ok=True)
    out["cache_write"] = speed([run(data, cache=cache)])
    # Speed runs write no predictions: VW's -p output alone costs ~3 us an event (about as
    # much as learning), and the `vw` figures we quote are of learning, not of logging.
    text_runs, cache_runs = [], []
    for r in range(rounds):
        text_runs.append(run(data))
        between(r)
        cache_runs.append(run(data, cache=cache))
    with_preds = run(data, preds=preds)
    text_preds = read_predictions(preds)
    out["default_text"] = {**speed(text_runs), **quality(text_preds, labels),
                           "seconds_with_predictions": with_preds["seconds"],
                           "command_with_predictions": with_preds["command"]}

    run(data, cache=cache, preds=preds)
    cache_preds = read_predictions(preds)
    out["default_cache"] = {**speed(cache_runs), **quality(cache_preds, labels),
                            "same_predictions_as_text": bool(np.array_equal(cache_preds,
                                                                            text_preds))}

    extra = ftrl_args(same_as["alpha"], same_as["beta"], same_as.get("l1", 0.0),
                      same_as.get("l2", 0.0))
    r = run(data, cache=cache, preds=preds, extra=extra)
    same_preds = read_predictions(preds)
    out["same_hparams"] = {**r, **quality(same_preds, labels)}
    # Kept in memory (not written out) to score VW on any prefix of the stream: progressive
    # predictions on the first n events are what VW would have made on those n alone.
    out["_predictions"] = {"default": text_preds, "same_hparams": same_preds, "labels": labels}

    # The grid is scored by VW's own loss (no -p: writing predictions costs more than
    # learning); only the best is run again with -p for its AUC.
    rows = []
    for alpha, beta, l2 in itertools.product(*grid.values()):
        r = run(data, cache=cache, extra=ftrl_args(alpha, beta, 0.0, l2))
        rows.append({"ftrl_alpha": alpha, "ftrl_beta": beta, "l2": l2, **r,
                     "logloss": r["vw_logloss"]})
    out["grid"] = rows
    best = min(rows, key=lambda row: row["logloss"])
    again = run(data, cache=cache, preds=preds,
                extra=ftrl_args(best["ftrl_alpha"], best["ftrl_beta"], 0.0, best["l2"]))
    out["best_of_grid"] = {**best, **again, **quality(read_predictions(preds), labels)}
    # VW's loss and ours, from its predictions, must agree (else the grid was ranked wrongly).
    out["vw_loss_matches_predictions"] = bool(
        abs(out["default_text"]["logloss"] - with_preds["vw_logloss"]) < 1e-6)
    preds.unlink(missing_ok=True)
    cache.unlink(missing_ok=True)
    return out


def _version() -> str:
    from importlib.metadata import version
    return version("vowpalwabbit")
