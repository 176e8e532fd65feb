"""The local supervisor behind `deltaps up`: runs every node, restarts crashed ones.

It runs in its own process group, ignoring the terminal's hang-up. A node that exits without
being asked to is restarted with exponential back-off (reset once it has stayed up for a
while); pids and restart counts are written to the cluster file so `deltaps status` can show
them. On SIGTERM it stops every node with SIGTERM, waits for them (SIGKILL after a grace
period), and exits.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.config import ClusterFile, NodeInfo
from common.logs import setup_logging

log = logging.getLogger("deltaps.supervisor")
GRACE_S = 10.0
STABLE_S = 30.0
MAX_BACKOFF_S = 10.0


@dataclass
class Managed:
    """One supervised node: its process and when it may be restarted after a crash."""

    info: NodeInfo
    proc: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = 0.5
    restart_at: float = 0.0


def node_command(info: NodeInfo, cluster_file: Path) -> list[str]:
    module = {"shard": "deploy.nodes.shard", "replica": "deploy.nodes.replica"}[info.role]
    return [sys.executable, "-m", module, "--cluster", str(cluster_file),
            "--index", str(info.index)]


class Supervisor:
    """Keeps every node of a local cluster running: starts them, restarts a crashed one with
    back-off, and stops them all on SIGTERM, so `deltaps up` leaves one process to manage."""

    def __init__(self, cluster_file: Path):
        self.cluster_file = cluster_file
        self.cluster = ClusterFile.load(cluster_file)
        self.log_dir = cluster_file.parent / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = [Managed(n) for n in self.cluster.nodes]
        self.stopping = False

    def start(self, node: Managed) -> None:
        name = f"{node.info.role}-{node.info.index}"
        logfile = open(self.log_dir / f"{name}.log", "ab")
        node.proc = subprocess.Popen(node_command(node.info, self.cluster_file), stdout=logfile,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logfile.close()
        node.started = time.monotonic()
        node.info.pid = node.proc.pid
        log.info("started %s pid %d", name, node.proc.pid)

    def save(self) -> None:
        self.cluster.supervisor_pid = os.getpid()
        self.cluster.save(self.cluster_file)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal closing stops nothing
        for node in self.nodes:  # shards first: replicas bootstrap from them
            self.start(node)
        self.save()
        while not self.stopping:
            time.sleep(0.2)
            changed = False
            now = time.monotonic()
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    code = node.proc.returncode
                    up_for = now - node.started
                    node.backoff = 0.5 if up_for > STABLE_S else min(node.backoff * 2, MAX_BACKOFF_S)
                    node.restart_at = now + node.backoff
                    node.proc = None
                    log.warning("%s-%d exited with %s after %.1fs; restarting in %.1fs",
                                node.info.role, node.info.index, code, up_for, node.backoff)
                elif node.proc is None and now >= node.restart_at and not self.stopping:
                    node.info.restarts += 1
                    self.start(node)
                    changed = True
            if changed:
                self.save()
        self.shutdown()

    def _stop(self, *_args) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        running = [n.proc for n in self.nodes if n.proc is not None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored SIGTERM; killing", proc.pid)
                proc.kill()
                proc.wait()
        log.info("all nodes stopped")


def main() -> None:
    setup_logging("supervisor")
    Supervisor(Path(sys.argv[1]).resolve()).run()


if __name__ == "__main__":
    main()
