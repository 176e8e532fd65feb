"""Fixtures that start real deltaps nodes as processes on 127.0.0.1 and always stop them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import ClusterFile, load_spec
from deploy.admin import node_status
from deploy.layout import plan_cluster

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = (REPO.parent / "shared" / "data" / "movielens-100k").resolve()


class LocalCluster:
    """Shard and replica processes started from a spec; every process is tracked by PID."""

    def __init__(self, tmp: Path, spec_text: str = "", shards: int = 2, replicas: int = 1):
        self.dir = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        spec = load_spec(text=spec_text)
        spec.shards, spec.replicas, spec.data_dir = shards, replicas, str(tmp)
        self.cluster = plan_cluster(spec)
        self.path = tmp / "cluster.json"
        self.cluster.save(self.path)
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}

    @property
    def spec(self):
        return self.cluster.spec

    def start(self, role: str, index: int) -> subprocess.Popen:
        module = {"shard": "ps", "replica": "serving"}[role]
        log = open(self.dir / f"{role}-{index}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", module, "--cluster", str(self.path),
                                 "--index", str(index)], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[(role, index)] = proc
        return proc

    def start_all(self, wait: bool = True) -> "LocalCluster":
        for n in self.cluster.shards():
            self.start("shard", n.index)
        for n in self.cluster.replicas():
            self.start("replica", n.index)
        if wait:
            self.wait_ready()
        return self

    def address(self, role: str, index: int) -> str:
        return next(n.address for n in self.cluster.nodes if n.role == role and n.index == index)

    def wait_ready(self, timeout: float = 30.0, role: str | None = None,
                   index: int | None = None) -> None:
        deadline = time.monotonic() + timeout
        for (r, i), proc in self.procs.items():
            if (role and r != role) or (index is not None and i != index):
                continue
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{r}-{i} exited with {proc.returncode}:\n"
                                       + self.log(r, i))
                st = node_status(self.address(r, i), timeout=0.5)
                if st and st["state"] in ("serving", "ready"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{r}-{i} not ready: {st}\n" + self.log(r, i))
                time.sleep(0.05)

    def log(self, role: str, index: int) -> str:
        path = self.dir / f"{role}-{index}.log"
        return path.read_text() if path.exists() else ""

    def stop(self, role: str, index: int, sig=signal.SIGTERM, timeout: float = 15.0) -> int:
        proc = self.procs[(role, index)]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> dict:
        codes = {}
        for role in ("replica", "shard"):
            for (r, i) in list(self.procs):
                if r == role:
                    codes[(r, i)] = self.stop(r, i)
        return codes


@pytest.fixture
def local_cluster(tmp_path):
    """Factory: local_cluster(spec_text, shards, replicas) -> LocalCluster (stopped at teardown)."""
    made = []

    def make(spec_text: str = "", shards: int = 2, replicas: int = 1) -> LocalCluster:
        c = LocalCluster(tmp_path / f"c{len(made)}", spec_text, shards, replicas)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop_all()


@pytest.fixture(scope="session", autouse=True)
def _zmq_context_cleanup():
    yield
    from common.transport import context
    context().destroy(linger=0)
