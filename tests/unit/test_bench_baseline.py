"""Noise bands measured across runs (bench.baseline) and applied by the regression check."""
from __future__ import annotations

import pytest

from bench.baseline import make_baseline, measured_bands, spread
from bench.compare import compare
from bench.report import HIGHER, LOWER, figure


def run(started: str, **values) -> dict:
    figs = [figure("events_per_s", values["speed"], "events/s", HIGHER, {"batch": 4096}),
            figure("p99_ms", values["p99"], "ms", LOWER, {"rate": 1000}),
            figure("logloss", values["logloss"], "nats", LOWER, band=0.001),
            figure("vw_events_per_s", values["vw"], "events/s", HIGHER, reference=True),
            figure("bayes", 0.41, "nats", None)]
    return {"started": started, "machine": {"git_commit": "abc"},
            "sections": {"s": {"figures": figs}}}


def test_spread_is_the_largest_change_compare_could_report_between_two_runs():
    assert spread([100.0, 80.0, 90.0]) == pytest.approx(0.25)  # 80 -> 100
    assert spread([2.0, 2.0]) == 0.0
    assert spread([0.0, 1.0]) == float("inf")


def test_bands_widen_to_the_spread_and_never_narrow():
    runs = [run("2026-01-02", speed=900, p99=3.0, logloss=0.4433, vw=600),
            run("2026-01-01", speed=1000, p99=1.0, logloss=0.4433, vw=700)]
    bands = measured_bands(runs)
    assert bands["p99_ms"] == pytest.approx(2.0) and "bayes" not in bands
    base = make_baseline(runs, 0.15)
    figs = {f["name"]: f for f in base["sections"]["s"]["figures"]}
    assert figs["events_per_s"]["value"] == 900  # the newest run's figures
    assert "band" not in figs["events_per_s"]  # 11% spread: the default 15% stays
    assert figs["p99_ms"]["band"] == pytest.approx(2.0)
    assert figs["logloss"]["band"] == 0.001  # deterministic: its own tight band stays
    assert figs["vw_events_per_s"]["band"] == pytest.approx(1 / 6, abs=1e-4)  # 600 -> 700
    assert base["noise"]["bands_widened"] == 2


def test_figures_with_other_settings_get_no_measured_band():
    a, b = run("1", speed=1, p99=1.0, logloss=0.4, vw=1), run("2", speed=1, p99=5.0,
                                                             logloss=0.4, vw=1)
    b["sections"]["s"]["figures"][1]["config"]["rate"] = 200
    assert "p99_ms" not in measured_bands([a, b])


def test_compare_applies_the_measured_band_of_the_baseline():
    runs = [run("1", speed=1000, p99=1.0, logloss=0.4433, vw=700),
            run("2", speed=1000, p99=2.0, logloss=0.4433, vw=700)]
    baseline = make_baseline(runs, 0.15)  # p99 band 100%
    noisy = run("3", speed=1000, p99=3.5, logloss=0.4433, vw=700)  # +75%: within the band
    slower = run("3", speed=700, p99=2.0, logloss=0.4500, vw=700)  # -30% and +1.5%
    verdicts = {v["name"]: v["verdict"] for v in compare(baseline, noisy)[0]}
    assert verdicts["p99_ms"] == "same"
    verdicts = {v["name"]: v["verdict"] for v in compare(baseline, slower)[0]}
    assert verdicts["events_per_s"] == "REGRESSED" and verdicts["logloss"] == "REGRESSED"
    assert verdicts["bayes"] == "info"
