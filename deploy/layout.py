"""Turn a spec into a concrete cluster: node addresses and the cluster file's place on disk."""
from __future__ import annotations

import random
import socket
from pathlib import Path

from common.config import ClusterFile, ClusterSpec, NodeInfo


PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range, so outgoing connections never take them


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct free ports, drawn at random below the ephemeral range.

    Ports the OS hands out for bind(0) come from the ephemeral range, which outgoing
    connections (every zmq connect) also draw from; one could take a node's port in the
    instant between planning and binding. Ports below that range have no such race.
    """
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, rng.randrange(*PORT_RANGE)))
            except OSError:
                s.close()
                continue
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def plan_cluster(spec: ClusterSpec) -> ClusterFile:
    """Addresses for every shard (requests, updates, metrics) and replica (requests, HTTP,
    metrics): from the spec's base ports where it sets them, free ports for the rest."""
    wanted = {"zmq": (spec.base_port, 2 * spec.shards + spec.replicas),
              "http": (spec.http_base_port, spec.replicas),
              "metrics": (spec.metrics_base_port, spec.shards + spec.replicas)}
    fixed = {kind: list(range(base, base + n)) for kind, (base, n) in wanted.items() if base}
    taken = {p for ports in fixed.values() for p in ports}
    need = sum(n for kind, (_, n) in wanted.items() if kind not in fixed)
    drawn = iter([p for p in free_ports(spec.host, need + len(taken)) if p not in taken][:need])
    ports = {kind: iter(fixed[kind] if kind in fixed else [next(drawn) for _ in range(n)])
             for kind, (_, n) in wanted.items()}

    def url(kind: str, scheme: str) -> str:
        return f"{scheme}://{spec.host}:{next(ports[kind])}"

    scheme = "https" if spec.security.http_tls_cert_file else "http"
    nodes = []
    for k in range(spec.shards):
        nodes.append(NodeInfo("shard", k, url("zmq", "tcp"), url("zmq", "tcp"),
                              metrics_address=url("metrics", "http")))
    for r in range(spec.replicas):
        nodes.append(NodeInfo("replica", r, url("zmq", "tcp"), http_address=url("http", scheme),
                              metrics_address=url("metrics", "http")))
    return ClusterFile(spec, nodes)


def cluster_file_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "cluster.json"
