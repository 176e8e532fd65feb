"""Training workers a cluster's `deltaps status` shows: each `deltaps train` that serves
/metrics notes itself in `<cluster file's directory>/workers/<pid>.json` while it runs.

Workers are not nodes of the cluster file (any number come and go, started by hand or by a
job), so they leave a note beside it instead; a note whose process is gone is skipped and
removed by the next `deltaps status`. What a worker has done so far (events learned, and a
stream source's consumer lag and pending entries) status reads from its /metrics.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

# what status shows of a worker's /metrics: series name -> key in its model's row
PROGRESS = {"deltaps_worker_events": "events", "deltaps_worker_logloss": "logloss",
            "deltaps_worker_source_lag": "lag", "deltaps_worker_source_pending": "pending"}


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
        model = {"source": note["source"], **progress(note["metrics_address"])}
        rows.append({"role": "worker", "index": note["pid"], "address": "-", "http": "",
                     "metrics": note["metrics_address"], "pid": note["pid"], "cpus": None,
                     "restarts": 0, "state": "training", "models": {note["model"]: model}})
    return rows


def progress(metrics_address: str, timeout: float = 1.0) -> dict:
    """The PROGRESS values a worker's /metrics shows now; {} when it does not answer in time
    (status then shows the worker without them rather than waiting on it)."""
    import urllib.request  # here: a training worker imports this module and never reads

    from prometheus_client.parser import text_string_to_metric_families
    try:
        with urllib.request.urlopen(metrics_address.rstrip("/") + "/metrics",
                                    timeout=timeout) as reply:
            text = reply.read().decode()
    except (OSError, ValueError):
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = PROGRESS.get(sample.name.removesuffix("_total"))
            if key is not None:
                out[key] = int(sample.value) if key != "logloss" else round(sample.value, 5)
    return out
