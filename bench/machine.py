"""What the figures were measured on: cpus, load, versions, commit.

Why: on a shared 2-core machine a figure means little without the load around it, and a
comparison across runs is only meaningful between like machines and known commits.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def describe() -> dict:
    return {"nproc": os.cpu_count(), "cpu_model": _cpu_model(),
            "python": platform.python_version(), "numpy": _version("numpy"),
            "pyzmq": _version("pyzmq"), "vowpalwabbit": _version("vowpalwabbit"),
            "psutil": _version("psutil"), "git_commit": _git("rev-parse", "HEAD") or "unknown",
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "load_before": list(os.getloadavg())}


class LoadSampler:
    """1-minute load average at each section boundary (cheap, no background thread)."""

    def __init__(self):
        self.samples: list[dict] = []

    def sample(self, label: str) -> None:
        load1, load5, _ = os.getloadavg()
        self.samples.append({"at": label, "t": round(time.time(), 1), "load1": load1,
                             "load5": load5})
