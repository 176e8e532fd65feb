"""Asking running nodes about themselves: status of every node, readiness, lag."""
from __future__ import annotations

import time

from common import messages as m
from common.config import ClusterFile
from common.errors import DeltapsError
from common.transport import Channel


def node_status(address: str, timeout: float = 1.0) -> dict | None:
    """A node's status dict, or None if it does not answer."""
    ch = Channel(address)
    try:
        return ch.request(m.StatusRequest(), timeout).info
    except DeltapsError:
        return None
    finally:
        ch.close()


def cluster_status(cluster: ClusterFile, timeout: float = 1.0) -> list[dict]:
    """One row per node: what the cluster file says plus what the node answers."""
    rows = []
    shard_seqs: dict[str, list[int]] = {}
    infos = [(n, node_status(n.address, timeout)) for n in cluster.nodes]
    for node, info in infos:
        if node.role == "shard" and info:
            for model, st in info["models"].items():
                shard_seqs.setdefault(model, [0] * len(cluster.shards()))[node.index] = st["seq"]
    for node, info in infos:
        row = {"role": node.role, "index": node.index, "address": node.address,
               "pid": node.pid, "restarts": node.restarts,
               "state": info["state"] if info else "down", "models": {}}
        if info:
            for model, st in info["models"].items():
                if node.role == "shard":
                    row["models"][model] = {"seq": st["seq"], "pushes": st["pushes"]}
                else:
                    want = shard_seqs.get(model, [])
                    lag = sum(max(0, w - v) for w, v in zip(want, st["version"]))
                    row["models"][model] = {"version": st["version"], "lag": lag,
                                            "ready": st["ready"],
                                            "staleness_ms": st["staleness_ms"]}
        rows.append(row)
    return rows


def wait_ready(cluster: ClusterFile, timeout: float = 60.0) -> bool:
    """Until every shard answers and every replica is ready on every model."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = cluster_status(cluster, timeout=0.5)
        if all(r["state"] in ("serving", "ready") for r in rows):
            return True
        time.sleep(0.2)
    return False
