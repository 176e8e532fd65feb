"""Training workers a cluster's `deltaps status` shows: each `deltaps train` that serves
/metrics notes itself in `<cluster file's directory>/workers/<pid>.json` while it runs.

Workers are not nodes of the cluster file (any number come and go, started by hand or by a
job), so they leave a note beside it instead; a note whose process is gone is skipped and
removed by the next `deltaps status`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def _dir(cluster_file: str | Path) -> Path:
    return Path(cluster_file).resolve().parent / "workers"


def register(cluster_file: str | Path, model: str, source: str, metrics_address: str) -> Path:
    """Note this process as a worker; returns the note's path (remove it with `unregister`)."""
    directory = _dir(cluster_file)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "model": model, "source": source,
                               "metrics_address": metrics_address}))
    tmp.replace(path)
    return path


def unregister(path: Path) -> None:
    path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie child of ours counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def worker_rows(cluster_file: str | Path) -> list[dict]:
    """One `deltaps status` row per running worker, in pid order."""
    rows = []
    for path in sorted(_dir(cluster_file).glob("*.json")):
        try:
            note = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not alive(int(note.get("pid", 0)) or -1):
            path.unlink(missing_ok=True)
            continue
        rows.append({"role": "worker", "index": note["pid"], "address": "-", "http": "",
                     "metrics": note["metrics_address"], "pid": note["pid"], "cpus": None,
                     "restarts": 0, "state": "training",
                     "models": {note["model"]: {"source": note["source"]}}})
    return rows
