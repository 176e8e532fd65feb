"""The processes a benchmark of what a user runs times: a `deltaps` command as its own process,
against a fresh local cluster, with the checkout's code as an installed copy would run it.

Why one place: the planted, MovieLens, profile and two-worker sections all spawn `deltaps
train` the same way, and a figure is only comparable with another if both were taken so.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from deploy.local import LocalCluster

REPO = Path(__file__).resolve().parents[1]
SHARDS, REPLICAS = 2, 1
PACKAGES = ("common", "deploy", "ps", "serving", "worker")


def user_env() -> dict:
    """This checkout's code first on the path, as `deltaps` run from it would import it, and
    with Python's bytecode cache as a user has it: PYTHONDONTWRITEBYTECODE, which a
    development shell may set, is not passed on (else every process compiles every module
    it imports from source again, tens of milliseconds that no installed copy pays)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def deltaps_cmd(*args: str) -> list[str]:
    """`deltaps ARGS` (the console script is `deploy.cli:main`)."""
    return [sys.executable, "-m", "deploy.cli", *args]


def timed(cmd: list[str], scratch: Path, name: str) -> dict:
    """Run one process to its exit: wall seconds from spawn to exit, its CPU seconds and peak
    RSS (from wait4), exit code, and its output (via files, so a full pipe never stalls it)."""
    out_path, err_path = scratch / f"{name}.out", scratch / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=user_env(), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    res = {"seconds": round(seconds, 4), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 4),
           "max_rss_mb": round(usage.ru_maxrss / 1024, 1), "returncode": proc.returncode,
           "stdout": out_path.read_text(errors="replace"),
           "stderr": err_path.read_text(errors="replace")}
    out_path.unlink()
    err_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: "
                           f"{res['stderr'][-2000:]}")
    return res


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def with_cluster(ctx, name: str, run):
    """`run(cluster)` against a fresh cluster of SHARDS shards and REPLICAS replicas (default
    spec, as `deltaps up` starts it), and the CPU seconds each node spent during it. As
    `deltaps up` does, the worker's kernel is compiled ahead of time first if this version has
    no build, and the checkout's modules are byte-compiled, as pip does when it installs a
    package (both untimed; no-ops once done)."""
    subprocess.run([sys.executable, "-m", "worker.models.prebuilt"], env=user_env(), cwd=REPO,
                   capture_output=True, check=False)
    subprocess.run([sys.executable, "-m", "compileall", "-q", *PACKAGES], env=user_env(), cwd=REPO,
                   capture_output=True, check=False)
    cluster = LocalCluster(ctx.workdir / f"cluster-{name}", "", SHARDS, REPLICAS)
    try:
        cluster.start_all()
        pids = {f"{role}-{i}": p.pid for (role, i), p in cluster.procs.items()}
        cpu0 = {k: _cpu(pid) for k, pid in pids.items()}
        out = run(cluster)
        cpu = {k: round(_cpu(pid) - cpu0[k], 3) for k, pid in pids.items()}
    finally:
        cluster.stop_all()
        shutil.rmtree(cluster.dir, ignore_errors=True)
    return out, cpu
