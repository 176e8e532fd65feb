"""What each command's process loads before it does anything: the fixed cost a user pays on
every `deltaps train` and that every shard or replica pays on every (re)start.

Why a test: one eager import (a node command imported by the CLI group, numba reached through
the optimizer registry, asyncio through zmq's monitor helpers) silently adds a large share of a
second to every run, and nothing else notices. Each case imports a module in a fresh
interpreter and names the heavy packages it must not have loaded.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("numba", "asyncio", "pyarrow", "rich", "matplotlib", "ps", "serving", "worker")

CASES = {
    # the CLI group: each node command is imported only when it runs
    "deploy.cli": HEAVY,
    # a shard adds deltas and publishes weights: no optimizer math (numba); asyncio it loads
    # for its HTTP endpoints (/metrics, /healthz, /readyz: common.httpd)
    "deploy.nodes.shard": ("numba", "pyarrow", "rich", "serving", "worker"),
    "deploy.nodes.replica": ("numba", "pyarrow", "rich", "ps", "worker"),
    # the worker: a blocking channel, no server code, no terminal or plotting libraries, and
    # pyarrow only once an input needs it (a JSON lines or TSV block or a MovieLens file the
    # compiled scans decline)
    "deploy.nodes.worker": ("asyncio", "pyarrow", "rich", "matplotlib", "ps", "serving"),
    "common.optim": ("numba",),
}


def loaded(module: str) -> set[str]:
    code = (f"import sys, {module}\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", sorted(CASES))
def test_a_command_loads_only_what_it_needs(module):
    assert loaded(module).isdisjoint(CASES[module]), \
        f"importing {module} loads {sorted(loaded(module) & set(CASES[module]))}"


@pytest.mark.parametrize("module", ["deploy.cli", "deploy.nodes.worker"])
def test_a_command_starts_no_blas_threads(module):
    """OpenBLAS starts a thread per core when numpy loads, and each spins for a while before it
    sleeps: CPU taken from a starting `deltaps train`. A command asks for one thread (the
    caller's own) before numpy loads; a value the user set stays theirs."""
    code = (f"import os, {module}, numpy\n"
            "print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)

    def run(extra: dict) -> list[str]:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, **extra}, cwd=REPO, timeout=120,
                              check=True).stdout.split()

    assert run({}) == ["1", "1"]
    assert run({"OPENBLAS_NUM_THREADS": "2"})[1] == "2"
