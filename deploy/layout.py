"""Turn a spec into a concrete cluster: node addresses and the cluster file's place on disk."""
from __future__ import annotations

import socket
from pathlib import Path

from common.config import ClusterFile, ClusterSpec, NodeInfo


def free_port(host: str) -> int:
    """A port the OS just handed out; good enough to bind again an instant later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def plan_cluster(spec: ClusterSpec) -> ClusterFile:
    """Addresses for every shard (requests + updates) and replica (requests)."""
    ports = iter(range(spec.base_port, spec.base_port + 4 * (spec.shards + spec.replicas)))

    def port() -> int:
        return next(ports) if spec.base_port else free_port(spec.host)

    nodes = []
    for k in range(spec.shards):
        nodes.append(NodeInfo("shard", k, f"tcp://{spec.host}:{port()}",
                              f"tcp://{spec.host}:{port()}"))
    for r in range(spec.replicas):
        nodes.append(NodeInfo("replica", r, f"tcp://{spec.host}:{port()}"))
    return ClusterFile(spec, nodes)


def cluster_file_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "cluster.json"
