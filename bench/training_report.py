"""The tables, figures and notes of the pre-parsed training sections (`bench.training`): one
batch size's rounds as one result, and how it reads against VW's.
"""
from __future__ import annotations

import statistics

from bench import vw
from bench.processes import REPLICAS, SHARDS
from bench.report import HIGHER, LOWER, figure, fmt


def over_rounds(runs: list[dict], vw_res: dict) -> dict:
    """One batch size's rounds as one result: events, quality and settings from the first round,
    speed and CPU as medians over rounds, ratios to VW as medians of per-round ratios;
    `per_round` keeps every round's figures, `each_round` every round's whole result."""
    text, cache = vw_res["default_text"], vw_res["default_cache"]
    speed = [r["events_per_s"] for r in runs]
    cpu = [round(sum(r["cpu_s"].values()) * 1e6 / max(r["events"], 1), 1) for r in runs]
    per_round = {"events_per_s": speed, "cpu_s_per_1m_total": cpu,
                 "speed_vs_vw_text": _ratios(speed, text["all_events_per_s"]),
                 "speed_vs_vw_cache": _ratios(speed, cache["all_events_per_s"]),
                 "cpu_vs_vw_text": _ratios(cpu, _vw_cpu_per_1m(text)),
                 "cpu_vs_vw_cache": _ratios(cpu, _vw_cpu_per_1m(cache)),
                 **{k: [r[k] for r in runs] for k in ("seconds", "replica_catch_up_s",
                                                      "logloss", "auc")}}
    median = statistics.median
    procs = runs[0]["cpu_s"]
    return {**runs[0],
            **{k: median(v) for k, v in per_round.items() if k not in ("logloss", "auc")},
            "cpu_s": {p: median(r["cpu_s"][p] for r in runs) for p in procs},
            "cpu_s_per_1m_events": {p: median(r["cpu_s_per_1m_events"][p] for r in runs)
                                    for p in procs},
            "same_quality_every_round": all(len(set(per_round[k])) == 1
                                            for k in ("logloss", "auc")),
            "per_round": per_round, "each_round": runs}


def _ratios(ours: list[float], vws: list[float]) -> list[float]:
    return [round(a / b, 4) for a, b in zip(ours, vws, strict=True)]


def _vw_cpu_per_1m(timed: dict) -> list[float]:
    return [round(c * 1e6 / timed["events"], 2) for c in timed["all_cpu_seconds"]]


COLUMNS = ["run", "batch", "events", "events/s (median)", "events/s by round", "logloss", "AUC",
           "logloss - VW default", "logloss - VW same settings", "speed / VW text",
           "speed / VW cache", "CPU s per 1M events", "CPU / VW text", "CPU / VW cache"]


def deltaps_row(r: dict, vw_res: dict) -> list:
    at = vw.on_prefix(vw_res, r["events"])
    cpu = r["cpu_s_per_1m_events"]
    delay = f", bounded delay {r['max_delay']}" if r["max_delay"] else ""
    return [f"deltaps from pre-parsed batches ({SHARDS} shards, {REPLICAS} replica, 1 worker"
            f"{delay})", r["batch_size"],
            r["events"], r["events_per_s"], _by_round(r["per_round"]["events_per_s"]),
            r["logloss"], r["auc"],
            round(r["logloss"] - at["default"]["logloss"], 4),
            round(r["logloss"] - at["same_hparams"]["logloss"], 4),
            r["speed_vs_vw_text"], r["speed_vs_vw_cache"],
            f"total {r['cpu_s_per_1m_total']:g}: "
            + ", ".join(f"{k} {cpu[k]:g}" for k in sorted(cpu)),
            r["cpu_vs_vw_text"], r["cpu_vs_vw_cache"]]


def _by_round(values: list[float]) -> str:
    return " / ".join(fmt(v) for v in values)


def vw_rows(res: dict, events: int) -> list[list]:
    d, c, same, best = (res["default_text"], res["default_cache"], res["same_hparams"],
                        res["best_of_grid"])
    alpha, beta = res["defaults"].get("ftrl_alpha", "?"), res["defaults"].get("ftrl_beta", "?")
    cpu = lambda r: f"vw {r['cpu_seconds'] * 1e6 / events:.1f}"  # noqa: E731
    blank = [""] * 7
    return [
        [f"VW default (--ftrl: alpha {alpha}, beta {beta}), from text", 1, events,
         d["events_per_s"], _by_round(d["all_events_per_s"]), d["logloss"], d["auc"],
         "", "", "", "", cpu(d), "", ""],
        ["VW default, from cache", 1, events, c["events_per_s"],
         _by_round(c["all_events_per_s"]), c["logloss"], c["auc"], "", "", "", "", cpu(c),
         "", ""],
        [f"VW with deltaps' FTRL settings{_hp(same)}", 1, events, "", "", same["logloss"],
         same["auc"], *blank],
        [f"VW best of {len(res['grid'])}-point grid{_hp(best)}, tuned on this same stream", 1,
         events, "", "", best["logloss"], best["auc"], *blank],
    ]


def _hp(r: dict) -> str:
    args = r["command"].split()
    pick = {k: args[args.index(k) + 1] for k in ("--ftrl_alpha", "--ftrl_beta", "--l2")
            if k in args}
    return " (" + ", ".join(f"{k.lstrip('-').replace('ftrl_', '')} {v}"
                            for k, v in pick.items()) + ")"


def figures(prefix: str, runs: dict, vw_res: dict) -> list[dict]:
    d, c = vw_res["default_text"], vw_res["default_cache"]
    best, same = vw_res["best_of_grid"], vw_res["same_hparams"]
    n = d["events"]
    cmd = lambda r, key="command": {"command": r[key], "events": n}  # noqa: E731
    figs = [figure(f"{prefix}.vw.text.events_per_s", d["events_per_s"], "events/s", HIGHER,
                   cmd(d), reference=True),
            figure(f"{prefix}.vw.cache.events_per_s", c["events_per_s"], "events/s", HIGHER,
                   cmd(c), reference=True),
            figure(f"{prefix}.vw.text.cpu_s_per_1m", round(d["cpu_seconds"] * 1e6 / n, 2),
                   "cpu s", LOWER, cmd(d), reference=True),
            figure(f"{prefix}.vw.cache.cpu_s_per_1m", round(c["cpu_seconds"] * 1e6 / n, 2),
                   "cpu s", LOWER, cmd(c), reference=True),
            figure(f"{prefix}.vw.default.logloss", d["logloss"], "nats", LOWER,
                   cmd(d, "command_with_predictions"), reference=True, band=0.01),
            figure(f"{prefix}.vw.default.auc", d["auc"], "", HIGHER,
                   cmd(d, "command_with_predictions"), reference=True, band=0.01),
            figure(f"{prefix}.vw.same_settings.logloss", same["logloss"], "nats", LOWER,
                   cmd(same), reference=True, band=0.01),
            figure(f"{prefix}.vw.best_of_grid.logloss", best["logloss"], "nats", LOWER,
                   cmd(best), reference=True, band=0.01)]
    for setting, r in runs.items():
        p = f"{prefix}.deltaps.{setting.label}"
        conf = {"command": "bench.training.train_deltaps", "events": r["events"],
                **r["config"]}
        at = vw.on_prefix(vw_res, r["events"])
        figs += [figure(f"{p}.events_per_s", r["events_per_s"], "events/s", HIGHER, conf),
                 figure(f"{p}.logloss", r["logloss"], "nats", LOWER, conf, band=0.01),
                 figure(f"{p}.auc", r["auc"], "", HIGHER, conf, band=0.01),
                 figure(f"{p}.speed_vs_vw_text", r["speed_vs_vw_text"], "x", None, conf),
                 figure(f"{p}.speed_vs_vw_cache", r["speed_vs_vw_cache"], "x", None, conf),
                 figure(f"{p}.logloss_minus_vw_default",
                        round(r["logloss"] - at["default"]["logloss"], 5), "nats", None, conf),
                 figure(f"{p}.logloss_minus_vw_same_settings",
                        round(r["logloss"] - at["same_hparams"]["logloss"], 5), "nats", None,
                        conf)]
        figs += [figure(f"{p}.cpu_s_per_1m.{proc}", v, "cpu s", LOWER, conf)
                 for proc, v in r["cpu_s_per_1m_events"].items()]
        figs += [figure(f"{p}.cpu_s_per_1m_total", r["cpu_s_per_1m_total"], "cpu s", LOWER,
                        conf),
                 figure(f"{p}.cpu_vs_vw_text", r["cpu_vs_vw_text"], "x", LOWER, conf),
                 figure(f"{p}.cpu_vs_vw_cache", r["cpu_vs_vw_cache"], "x", LOWER, conf)]
    return figs


def public(vw_res: dict) -> dict:
    return {k: v for k, v in vw_res.items() if not k.startswith("_")}


def measurement_notes(vw_res: dict, runs: dict) -> list[str]:
    """How speed, CPU and quality were measured, and any warning the runs raised."""
    d = vw_res["default_text"]
    rounds = len(d["all_seconds"])
    same = vw_res["default_cache"]["same_predictions_as_text"]
    varied = [s.label for s, r in runs.items() if not r["same_quality_every_round"]]
    notes = [f"Speed in {rounds} interleaved round{'s' if rounds > 1 else ''}, each VW from "
             f"text, deltaps as {', '.join(s.label for s in runs)} (batch size, and bounded "
             "delay where not 0; a fresh cluster each), "
             "then VW from its cache: this shared 2-core VM drifts by up to ±30% within a "
             "minute, so each deltaps run is set against VW runs seconds away. events/s is the "
             "median over rounds; 'speed / VW ...' and 'CPU / VW ...' are medians of per-round "
             "ratios (deltaps in round r over VW in round r). Speed / VW text by round: "
             + "; ".join(f"{s.label}: {_by_round(r['per_round']['speed_vs_vw_text'])}"
                         for s, r in runs.items()) + ".",
             "CPU: user+system seconds per 1M events, deltaps' summed over its processes "
             f"(worker, {SHARDS} shards, {REPLICAS} replica; medians over rounds), VW's over its "
             "parser and learner threads; far less sensitive to the machine's drift than "
             "events/s, and lower is better.",
             f"VW timed without -p; the same run from text writing predictions took "
             f"{d['seconds_with_predictions']:.2f} s. "
             + ("VW from cache made the same predictions as from text." if same else
                "WARNING: VW from cache made different predictions than from text.")
             + ("" if vw_res.get("vw_loss_matches_predictions", True) else
                " WARNING: VW's own loss differs from the logloss of its predictions, so the "
                "grid (ranked by VW's loss) may be ranked wrongly.")]
    if varied:
        notes.append("WARNING: deltaps' logloss or AUC differed between rounds in "
                     + ", ".join(varied) + " (a single worker should learn the same "
                     "weights every time); the table shows round 1's, details.deltaps every "
                     "round's.")
    elif rounds > 1:
        notes.append("deltaps' logloss and AUC were the same in every round.")
    return notes + ["'logloss - VW ...' compares on the same events (VW's progressive "
                    "predictions on the run's prefix). Both learn one event at a time (deltaps "
                    "on the worker, pushing the state's changes per batch)."]
