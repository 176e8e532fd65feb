"""Figures, tables and result files: the one format every section reports in.

Why: `bench.compare` must match a figure across runs by name and know which way is better,
and a reader must see how each figure was produced. So a section returns plain dicts:
``figures`` (name, value, unit, better, config), ``table`` (columns + rows for the markdown
report), ``details`` (anything else worth keeping in the JSON) and ``notes``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

HIGHER, LOWER = "higher", "lower"


def figure(name: str, value: float, unit: str, better: str | None, config: dict | None = None,
           *, reference: bool = False, band: float | None = None) -> dict:
    """One comparable number. better: HIGHER, LOWER or None (context only, never compared);
    reference: a yardstick (e.g. VW), shown by compare but never a regression of ours;
    band: this figure's own noise band (relative), overriding compare's default."""
    out = {"name": name, "value": value, "unit": unit, "better": better}
    if config:
        out["config"] = config
    if reference:
        out["reference"] = True
    if band is not None:
        out["band"] = band
    return out


def fmt(value, digits: int = 4) -> str:
    """A table cell: integers with thousands separators, floats to `digits` significant places."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,d}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if value else "0"
    return str(value)


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    """The whole run as markdown: machine line, then each section's table and notes."""
    m = result["machine"]
    load = m.get("load_samples", [])
    peak = max((s["load1"] for s in load), default=float("nan"))
    lines = [f"# deltaps benchmarks {result['started']}", "",
             f"`{result['command']}`  ",
             f"{m['cpu_model']} ({m['nproc']} cpus); python {m['python']}, numpy {m['numpy']}, "
             f"pyzmq {m['pyzmq']}, vowpalwabbit {m['vowpalwabbit']}; commit "
             f"{m['git_commit'][:12]}{' (dirty)' if m.get('git_dirty') else ''}  ",
             f"load average (1/5/15 min) before {_load(m['load_before'])}, after "
             f"{_load(m['load_after'])}, highest 1-min sample during the run {peak:.2f}", ""]
    for name, section in result["sections"].items():
        lines += [f"## {name}", ""]
        if section.get("skipped"):
            lines += [f"skipped: {section['skipped']}", ""]
            continue
        table = section.get("table")
        if table:
            lines += [markdown_table(table["columns"], table["rows"]), ""]
        lines += [f"- {note}" for note in section.get("notes", [])]
        lines.append("")
    return "\n".join(lines)


def _load(triple) -> str:
    return "/".join(f"{x:.2f}" for x in triple)


def write(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """`<started>.json` (everything) and `latest.md` (the tables) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = result["started"].replace(":", "").replace("-", "")
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown_report(result))
    return json_path, md_path


def _jsonable(x):
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} as JSON")


def all_figures(result: dict) -> dict[str, dict]:
    """Every figure of a run by name (sections' figures, flattened)."""
    return {f["name"]: f for s in result.get("sections", {}).values()
            for f in s.get("figures", [])}
