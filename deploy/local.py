"""A cluster of real node processes started in the foreground, for tests and benchmarks.

Unlike `deltaps up` (a detached supervisor), the caller owns every process by PID and must
call `stop_all()`; nodes' output goes to log files in the cluster's directory. Tests that do
not need separate processes run the same nodes as threads instead (deploy/inprocess.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from common.config import ClusterFile, load_spec
from common.security import install as install_curve, make_keys, make_token, secured
from common.transport import use_curve
from deploy.admin import node_status
from deploy.layout import plan_cluster
from deploy.supervisor import node_command

REPO = Path(__file__).resolve().parents[1]


def plan_local_cluster(directory: Path, spec_text: str, shards: int, replicas: int,
                       **cluster_settings) -> ClusterFile:
    """The cluster a local test cluster runs: the spec with `shards`, `replicas`, its data in
    `directory` and any other settings given, planned on free ports."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = load_spec(text=spec_text)
    spec.shards, spec.replicas, spec.data_dir = shards, replicas, str(directory)
    for key, value in cluster_settings.items():
        setattr(spec, key, value)
    return plan_cluster(spec)


class NodeCluster:
    """What every test cluster shares, whether its nodes are processes or threads: the planned
    cluster file, starting every node, addresses, and waiting until the nodes answer. A
    subclass says how one node starts (`start`) and whether it has ended (`_ended`)."""

    POLL_S = 0.05

    def __init__(self, directory: Path, spec_text: str = "", shards: int = 2, replicas: int = 1,
                 **cluster_settings):
        self.dir = Path(directory).resolve()
        self.cluster = plan_local_cluster(self.dir, spec_text, shards, replicas,
                                          **cluster_settings)
        self.path = self.dir / "cluster.json"
        self.cluster.save(self.path)

    @property
    def spec(self):
        return self.cluster.spec

    def start(self, role: str, index: int):
        raise NotImplementedError

    def started(self) -> list[tuple[str, int]]:
        """(role, index) of every node started so far."""
        raise NotImplementedError

    def _ended(self, role: str, index: int) -> str | None:
        """Why the node is no longer running, or None while it runs."""
        raise NotImplementedError

    def log(self, role: str, index: int) -> str:
        raise NotImplementedError

    def info(self, role: str, index: int):
        return next(n for n in self.cluster.nodes if n.role == role and n.index == index)

    def start_all(self, wait: bool = True):
        for n in self.cluster.shards():
            self.start("shard", n.index)
        for n in self.cluster.replicas():
            self.start("replica", n.index)
        if wait:
            self.wait_ready()
        return self

    def address(self, role: str, index: int) -> str:
        return self.info(role, index).address

    def wait_ready(self, timeout: float = 30.0, role: str | None = None,
                   index: int | None = None) -> None:
        """Until every started node (or the one named) answers status as serving or ready."""
        deadline = time.monotonic() + timeout
        for r, i in self.started():
            if (role and r != role) or (index is not None and i != index):
                continue
            while True:
                ended = self._ended(r, i)
                if ended is not None:
                    raise RuntimeError(f"{r}-{i} {ended}\n" + self.log(r, i))
                st = node_status(self.address(r, i), timeout=0.5)
                if st and st["state"] in ("serving", "ready"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{r}-{i} not ready: {st}\n" + self.log(r, i))
                time.sleep(self.POLL_S)


class LocalCluster(NodeCluster):
    """Shard and replica processes started from a spec; every process is tracked by PID.

    With `secure`, the cluster runs CURVE and an HTTP bearer token with fresh keys in
    `directory/keys` (as `deltaps up --secure`), and this process talks to it as admin.
    """

    def __init__(self, directory: Path, spec_text: str = "", shards: int = 2, replicas: int = 1,
                 secure: bool = False, **cluster_settings):
        super().__init__(directory, spec_text, shards, replicas, **cluster_settings)
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}
        self.secure = secure
        if secure:
            keys = self.dir / "keys"
            make_keys(keys)
            self.spec.security = secured(self.spec.security, keys, token=make_token(keys))
            self.cluster.save(self.path)
            install_curve(self.spec.security, "admin")

    def start(self, role: str, index: int) -> subprocess.Popen:
        info = self.info(role, index)
        log = open(self.dir / f"{role}-{index}.log", "ab")
        proc = subprocess.Popen(node_command(info, self.path), cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[(role, index)] = proc
        return proc

    def started(self) -> list[tuple[str, int]]:
        return list(self.procs)

    def _ended(self, role: str, index: int) -> str | None:
        proc = self.procs[(role, index)]
        return None if proc.poll() is None else f"exited with {proc.returncode}:"

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
        if self.secure:
            use_curve(None)
        return codes
