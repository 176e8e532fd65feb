"""`python -m bench.compare BASELINE.json [RUN.json]`: flag figures that got worse; exit 1 if any.

Why: speed and quality regress a little at a time; a noise band per figure separates a real
regression from a noisy 2-core machine. A figure is worse when it moved the wrong way (its
`better` direction: higher for events/s and AUC, lower for logloss, latency, CPU) by more than
its band, relative to the baseline. Bands: the figure's own (`band`, set by the section: tight
for deterministic quality figures, or measured across runs of one commit by `bench.baseline`;
the wider side's counts) or `--band` (default 15%) for timings.

A figure whose settings (its `config` other than the command text: events, batch size,
optimizer...) differ between the runs is "not comparable", never a regression.
Figures marked `reference` (Vowpal Wabbit's) are shown but never fail the comparison: VW
getting slower says the machine was busier, not that deltaps regressed. Figures without a
direction (context such as the Bayes floor) and figures missing on either side are listed.
RUN defaults to the newest JSON in bench/results/ (else in the baseline's directory).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from bench.report import HIGHER, LOWER, all_figures, markdown_table

_LOWER_HINTS = ("logloss", "latency", "_ms", "seconds", "cpu_s", "excess")


def direction(fig: dict) -> str | None:
    """A figure's better direction: its own, else guessed from its name (logloss, latency...)."""
    if "better" in fig:
        return fig["better"]
    name = fig["name"].lower()
    return LOWER if any(h in name for h in _LOWER_HINTS) else HIGHER


def change(base: float, new: float, better: str) -> float:
    """Relative change in the better direction: > 0 improved, < 0 worse."""
    if base == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new if better == HIGHER else -new)
    rel = (new - base) / abs(base)
    return rel if better == HIGHER else -rel


def compare(baseline: dict, run: dict, band: float = 0.15) -> tuple[list[dict], list[str]]:
    """One verdict per figure present in both runs, and the names present in only one."""
    old, new = all_figures(baseline), all_figures(run)
    verdicts = []
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        better = direction(b)
        va, vb = a.get("value"), b.get("value")
        row = {"name": name, "baseline": va, "run": vb, "unit": b.get("unit", ""),
               "better": better, "band": figure_band(a, b, band)}
        if better is None or not is_number(va) or not is_number(vb):
            row["verdict"] = "info"
        elif settings_of(a) != settings_of(b):
            row["verdict"] = "not comparable"
            row["differs"] = sorted(k for k in settings_of(a).keys() | settings_of(b).keys()
                                    if settings_of(a).get(k) != settings_of(b).get(k))
        else:
            rel = change(va, vb, better)
            row["change"] = rel
            if rel < -row["band"]:
                row["verdict"] = "reference worse" if b.get("reference") else "REGRESSED"
            elif rel > row["band"]:
                row["verdict"] = "improved"
            else:
                row["verdict"] = "same"
        verdicts.append(row)
    only = sorted((old.keys() ^ new.keys()))
    return verdicts, [f"{n} (only in {'baseline' if n in old else 'run'})" for n in only]


def figure_band(a: dict, b: dict, default: float) -> float:
    """The wider of the bands the two sides carry (a baseline made by `bench.baseline` carries
    measured ones), else `default`."""
    own = [f["band"] for f in (a, b) if is_number(f.get("band"))]
    return max(own) if own else default


def _peak_load(machine: dict) -> float:
    samples = [s.get("load1", 0.0) for s in machine.get("load_samples", [])]
    return max(samples + [machine.get("load_before", [0.0])[0]])


def settings_of(fig: dict) -> dict:
    """What a figure was measured on, minus the command text (it names scratch paths)."""
    return {k: v for k, v in fig.get("config", {}).items() if k != "command"}


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


RESULTS = Path(__file__).resolve().parent / "results"  # bench.run's default --out


def newest_run(baseline: Path) -> Path:
    """The newest result in bench/results/ (else next to the baseline), not the baseline."""
    for where in (RESULTS, baseline.parent):
        runs = sorted((p for p in where.glob("*.json") if p.resolve() != baseline.resolve()),
                      key=lambda p: p.stat().st_mtime)
        if runs:
            return runs[-1]
    raise click.ClickException(f"no run in {RESULTS} or next to {baseline}: give RUN.json")


@click.command()
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("run", required=False, type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path))
@click.option("--band", default=0.15, show_default=True, type=click.FloatRange(0),
              help="Relative noise band for figures that do not carry their own.")
@click.option("--all", "show_all", is_flag=True, help="List unchanged figures too.")
def main(baseline: Path, run: Path | None, band: float, show_all: bool):
    """Compare RUN (default: the newest result in bench/results/) against BASELINE."""
    run = run or newest_run(baseline)
    old, new = json.loads(baseline.read_text()), json.loads(run.read_text())
    verdicts, unmatched = compare(old, new, band)
    for label, path, r in (("baseline", baseline, old), ("run     ", run, new)):
        m = r.get("machine", {})
        click.echo(f"{label} {path}: commit {m.get('git_commit', '?')[:12]}, load before "
                   f"{m.get('load_before', ['?'])[0]}, {m.get('nproc')} x {m.get('cpu_model')}")
    mo, mn = old.get("machine", {}), new.get("machine", {})
    busy = [label for label, m in (("baseline", mo), ("run", mn)) if _peak_load(m) > m.get(
        "nproc", 1)]
    if busy:
        click.echo(f"warning: load average above the cpu count during the {' and the '.join(busy)}"
                   ": timings on a busy machine swing by up to 2x; quality figures still hold")
    if (mo.get("nproc"), mo.get("cpu_model")) != (mn.get("nproc"), mn.get("cpu_model")):
        click.echo("warning: the runs are from different machines; timings may not compare")
    click.echo("")
    shown = [v for v in verdicts if show_all or v["verdict"] not in ("same", "info")]
    if shown:
        click.echo(markdown_table(
            ["figure", "baseline", "run", "unit", "change", "band", "verdict"],
            [[v["name"], v["baseline"], v["run"], v["unit"],
              f"{v['change']:+.1%}" if "change" in v else "", f"{v['band']:.0%}",
              v["verdict"] + (f" ({', '.join(v['differs'])} differ)" if "differs" in v else "")]
             for v in shown]))
    regressed = [v for v in verdicts if v["verdict"] == "REGRESSED"]
    counts = {k: sum(v["verdict"] == k for v in verdicts)
              for k in ("REGRESSED", "reference worse", "improved", "same", "not comparable",
                        "info")}
    click.echo("\n" + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if unmatched:
        click.echo(f"{len(unmatched)} figure(s) in only one run: " + "; ".join(unmatched[:20])
                   + (" ..." if len(unmatched) > 20 else ""))
    sys.exit(1 if regressed else 0)


if __name__ == "__main__":
    main()
