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
    """Addresses for every shard (requests + updates) and replica (requests + HTTP)."""
    count = 2 * spec.shards + spec.replicas
    http_base = spec.http_base_port
    drawn = free_ports(spec.host, (0 if spec.base_port else count)
                       + (0 if http_base else spec.replicas))
    zmq_ports = (list(range(spec.base_port, spec.base_port + count)) if spec.base_port
                 else drawn[:count])
    http_ports = (list(range(http_base, http_base + spec.replicas)) if http_base
                  else drawn[len(drawn) - spec.replicas:] if spec.replicas else [])
    if spec.base_port and not http_base and set(http_ports) & set(zmq_ports):
        http_ports = [p for p in free_ports(spec.host, count + spec.replicas)
                      if p not in zmq_ports][:spec.replicas]
    ports = iter(zmq_ports)

    def port() -> int:
        return next(ports)

    scheme = "https" if spec.security.http_tls_cert_file else "http"
    nodes = []
    for k in range(spec.shards):
        nodes.append(NodeInfo("shard", k, f"tcp://{spec.host}:{port()}",
                              f"tcp://{spec.host}:{port()}"))
    for r in range(spec.replicas):
        nodes.append(NodeInfo("replica", r, f"tcp://{spec.host}:{port()}",
                              http_address=f"{scheme}://{spec.host}:{http_ports[r]}"))
    return ClusterFile(spec, nodes)


def cluster_file_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "cluster.json"
