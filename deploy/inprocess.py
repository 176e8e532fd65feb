"""A cluster of real nodes run as threads of the calling process, for fast integration tests.

`LocalCluster` (deploy/local.py) starts one Python process per node, which a test needs when it
kills a node, signals it, places it on CPUs or times it as a separate process; every other
test pays a Python start-up and an import of numpy per node for nothing, on a machine with two
cores. Here every shard and replica is the same node class `deltaps shard` / `deltaps serve`
runs, built from the same cluster file (planned by `deploy.layout.plan_cluster`) and serving
over real ZeroMQ sockets on its own 127.0.0.1 ports, but in a thread of this process. The
sockets, the wire protocol and the node code are the real ones; only the process around them
is shared.

What a thread does not have: signals (a node is stopped with `Node.stop()`, its own run loop
closing it as on SIGTERM), a pid of its own, CPU placement and the process tuning of
deploy/runtime (allocator, time slice); those stay with `LocalCluster`. A node is built inside
its own thread, as a process would build it, so its sockets are made and used by one thread.
"""
from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path

from common.config import ClusterFile, NodeInfo
from common.node import Node
from deploy.local import NodeCluster

STOP_TIMEOUT_S = 15.0
LOG_FORMAT = "%(asctime)s %(threadName)s %(levelname)s %(message)s"


def build_node(cluster_file: Path, role: str, index: int) -> Node:
    """The node `deltaps shard` / `deltaps serve --cluster cluster_file --index index` runs."""
    cf = ClusterFile.load(cluster_file)
    info = next(n for n in cf.nodes if n.role == role and n.index == index)
    from serving.http import parse_listen
    metrics = parse_listen(info.metrics_address) if info.metrics_address else None
    if role == "shard":
        from ps.shard import ShardNode
        return ShardNode(cf.spec, index, info.address, info.pub_address, metrics)
    from serving.replica import ReplicaNode
    http = parse_listen(info.http_address) if info.http_address else None
    return ReplicaNode(cf.spec, index, info.address, cf.shards(), http=http, metrics=metrics)


class NodeThread:
    """One node and the thread it runs in: built there, run there, closed there.

    `stop()` may come before the node exists (it is still being built, a shard recovering its
    state): it is remembered under a lock and the node's loop then returns as soon as it
    starts, still closing the node. An exception while building or running ends the thread and
    is kept, with its traceback, as what a process would have printed before exiting.
    """

    def __init__(self, cluster_file: Path, info: NodeInfo, logs: "NodeLogs", lines: list[str]):
        self.cluster_file = cluster_file
        self.logs, self.lines = logs, lines
        self.role, self.index = info.role, info.index
        self.name = f"{info.role}-{info.index}"
        self.node: Node | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop_asked = False
        self.thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    def start(self) -> "NodeThread":
        self.thread.start()
        return self

    def _main(self) -> None:
        self.logs.follow(threading.get_ident(), self.lines)
        try:
            node = build_node(self.cluster_file, self.role, self.index)
            with self._lock:
                self.node = node
                if self._stop_asked:
                    node.stop()  # run() then returns at once, and closes the node
            node.run()
        except BaseException:  # the thread's exit status, read by wait_ready and the tests
            self.error = traceback.format_exc()
        finally:
            self.logs.unfollow(threading.get_ident())

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the node and wait for its thread: 0 if it ended cleanly, 1 if it failed, None
        if it is still running after `timeout` (default `STOP_TIMEOUT_S`)."""
        timeout = STOP_TIMEOUT_S if timeout is None else timeout
        with self._lock:
            self._stop_asked = True
            if self.node is not None:
                self.node.stop()
        if self.thread.ident is not None:
            self.thread.join(timeout)
        return self.returncode()

    def returncode(self) -> int | None:
        if self.thread.ident is not None and self.thread.is_alive():
            return None
        return 1 if self.error else 0


class NodeLogs(logging.Handler):
    """Keeps the `deltaps.*` log records of each node's thread apart, as each process's log
    file keeps them, so a test can show what one node said (`InProcessCluster.log`). Records
    are told apart by thread id: two clusters in one test have nodes of the same name."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.threads: dict[int, list[str]] = {}

    def follow(self, ident: int, lines: list[str]) -> None:
        self.threads[ident] = lines

    def unfollow(self, ident: int) -> None:
        self.threads.pop(ident, None)

    def emit(self, record: logging.LogRecord) -> None:
        lines = self.threads.get(record.thread)
        if lines is not None:
            lines.append(self.format(record))


class InProcessCluster(NodeCluster):
    """Shard and replica threads started from a spec; the surface of `LocalCluster` that does
    not need processes (start, wait_ready, stop, addresses, cluster file, logs)."""

    POLL_S = 0.02

    def __init__(self, directory: Path, spec_text: str = "", shards: int = 2, replicas: int = 1,
                 **cluster_settings):
        super().__init__(directory, spec_text, shards, replicas, **cluster_settings)
        self.nodes: dict[tuple[str, int], NodeThread] = {}
        self.logs = NodeLogs()
        self.lines: dict[tuple[str, int], list[str]] = {}  # kept across restarts, as log files
        self._logger = logging.getLogger("deltaps")
        self._level: int | None = None

    def _attach_logs(self) -> None:
        if self._level is None:
            self._level = self._logger.level
            if self._logger.getEffectiveLevel() > logging.INFO:  # nodes log at INFO, as processes do
                self._logger.setLevel(logging.INFO)
            self._logger.addHandler(self.logs)

    def _detach_logs(self) -> None:
        if self._level is not None:
            self._logger.removeHandler(self.logs)
            self._logger.setLevel(self._level)
            self._level = None

    def start(self, role: str, index: int) -> NodeThread:
        """Start a node from the cluster file as it is on disk now (as a process would read it)."""
        current = self.nodes.get((role, index))
        if current is not None and current.alive():
            raise RuntimeError(f"{role}-{index} is already running")
        info = self.info(role, index)
        self._attach_logs()
        node = NodeThread(self.path, info, self.logs, self.lines.setdefault((role, index), []))
        self.nodes[(role, index)] = node
        return node.start()

    def started(self) -> list[tuple[str, int]]:
        return list(self.nodes)

    def _ended(self, role: str, index: int) -> str | None:
        node = self.nodes[(role, index)]
        if node.alive():
            return None
        return f"ended ({node.returncode()}):"  # log() holds its traceback

    def log(self, role: str, index: int) -> str:
        """What the node's thread logged (and, if it failed, the traceback)."""
        lines = self.lines.get((role, index), [])
        node = self.nodes.get((role, index))
        error = node.error if node is not None and node.error else ""
        return "".join(line + "\n" for line in lines) + error

    def stop(self, role: str, index: int, timeout: float | None = None) -> int | None:
        return self.nodes[(role, index)].stop(timeout)

    def stop_all(self) -> dict:
        """Replicas first, then shards (as LocalCluster does); the codes of every node."""
        codes = {}
        for role in ("replica", "shard"):
            for (r, i), node in list(self.nodes.items()):
                if r == role:
                    codes[(r, i)] = node.stop()
        if not self.running():
            self._detach_logs()
        return codes

    def running(self) -> list[str]:
        """Names of the node threads still alive."""
        return [node.name for node in self.nodes.values() if node.alive()]
