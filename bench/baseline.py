"""`python -m bench.baseline RUN.json RUN.json [...]`: a baseline whose noise bands were measured.

Why: one flat band does not fit a shared VM. Between two full runs of the same code twenty
minutes apart, a 15% band flagged 28 figures (read latencies, fsync push rates) while quality
figures agreed to the last digit. So a baseline is made from several runs of one commit: it
holds the newest run's figures, and each figure's band becomes the largest relative
difference seen between any two of the runs, when that is wider than the band the figure
already had (`bench.compare` applies the wider of the two sides' bands). A real regression
then has to move a figure further than the same code ever did on this machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from bench.compare import is_number, settings_of, direction
from bench.report import all_figures

DEFAULT_OUT = Path(__file__).resolve().parent / "baseline.json"


def spread(values: list[float]) -> float:
    """The largest relative change between two of `values`, relative to the smaller in size
    (the change `bench.compare` would report, whichever of the two were the baseline)."""
    low, high = min(values), max(values)
    base = min(abs(v) for v in values)
    if high == low:
        return 0.0
    return (high - low) / base if base else float("inf")


def measured_bands(runs: list[dict]) -> dict[str, float]:
    """Per figure present, comparable and numeric in every run: its spread across them."""
    figures = [all_figures(r) for r in runs]
    bands = {}
    for name in set.intersection(*(set(f) for f in figures)):
        same = [f[name] for f in figures]
        if direction(same[-1]) is None or not all(is_number(f.get("value")) for f in same):
            continue
        if any(settings_of(f) != settings_of(same[-1]) for f in same):
            continue
        bands[name] = spread([f["value"] for f in same])
    return bands


def make_baseline(runs: list[dict], default_band: float) -> dict:
    """The newest run, its figures' bands widened to what the runs measured."""
    runs = sorted(runs, key=lambda r: r.get("started", ""))
    baseline = json.loads(json.dumps(runs[-1]))  # a deep copy
    bands = measured_bands(runs)
    widened = 0
    for section in baseline.get("sections", {}).values():
        for fig in section.get("figures", []):
            observed = bands.get(fig["name"])
            if observed is None:
                continue
            if observed > fig.get("band", default_band):
                fig["band"] = round(min(observed, 1e6), 4)
                widened += 1
    baseline["noise"] = {
        "runs": [{"started": r.get("started"),
                  "commit": r.get("machine", {}).get("git_commit", "")[:12]} for r in runs],
        "figures_measured": len(bands), "bands_widened": widened, "default_band": default_band}
    return baseline


@click.command()
@click.argument("runs", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Where the baseline is written.")
@click.option("--band", default=0.15, show_default=True, type=click.FloatRange(0),
              help="The band of figures that carry none (bench.compare's default).")
def main(runs: tuple[Path, ...], out: Path, band: float):
    """Make a baseline from RUNS (full runs of one commit): the newest run's figures, with
    bands from the spread between the runs."""
    if len(runs) < 2:
        raise click.UsageError("give at least two runs: a band is measured between runs")
    loaded = [json.loads(p.read_text()) for p in runs]
    commits = {r.get("machine", {}).get("git_commit") for r in loaded}
    if len(commits) > 1:
        click.echo(f"warning: the runs are of {len(commits)} commits; the bands then include "
                   "what changed between them", err=True)
    baseline = make_baseline(loaded, band)
    out.write_text(json.dumps(baseline, indent=1) + "\n")
    noise = baseline["noise"]
    click.echo(f"wrote {out}: {noise['figures_measured']} figures measured over {len(runs)} "
               f"runs, {noise['bands_widened']} bands widened beyond their own or {band:.0%}")


if __name__ == "__main__":
    main()
