"""Asking running nodes about themselves: status of every node, readiness, lag."""
from __future__ import annotations

import time

from common.config import ClusterFile
from common.errors import DeltapsError
from common.messages import ChecksumRequest, StatusRequest, TakeSnapshot
from common.transport import Channel


def node_status(address: str, timeout: float = 1.0) -> dict | None:
    """A node's status dict, or None if it does not answer."""
    ch = Channel(address)
    try:
        return ch.request(StatusRequest(), timeout).info
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
               "http": node.http_address,
               "metrics": (info or {}).get("metrics_address") or node.metrics_address,
               "pid": node.pid, "cpus": info.get("cpus") if info else None,
               "restarts": node.restarts, "state": info["state"] if info else "down",
               "models": {}}
        if info:
            for model, st in info["models"].items():
                if node.role == "shard":
                    row["models"][model] = {"seq": st["seq"], "pushes": st["pushes"],
                                            "declared": st.get("declared")}
                else:
                    want = shard_seqs.get(model, [])
                    lag = sum(max(0, w - v) for w, v in zip(want, st["version"]))
                    row["models"][model] = {"version": st["version"], "lag": lag,
                                            "ready": st["ready"],
                                            "staleness_ms": st["staleness_ms"],
                                            "declared": st.get("declared")}
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


def _checksums(address: str, timeout: float) -> dict:
    ch = Channel(address)
    try:
        return ch.request(ChecksumRequest(), timeout).sums
    finally:
        ch.close()


def verify(cluster: ClusterFile, timeout: float = 30.0) -> list[dict]:
    """Compare every replica's copy of every model with the shards', shard by shard.

    Checksums are only compared at equal versions (same shard epoch and sequence number), so
    the check waits, up to `timeout`, for replicas to catch up; run it after traffic stops.
    Returns one row per (replica, model, shard) with "ok" True/False and the reason.
    """
    deadline = time.monotonic() + timeout
    while True:
        shard_sums: dict[str, dict[str, list]] = {}
        for node in cluster.shards():
            for model, per_shard in _checksums(node.address, 5.0).items():
                shard_sums.setdefault(model, {}).update(per_shard)
        rows = []
        for node in cluster.replicas():
            try:
                sums = _checksums(node.address, 5.0)
            except DeltapsError as exc:
                rows.append({"replica": node.index, "model": "*", "shard": "*", "ok": False,
                             "reason": f"no answer: {exc}"})
                continue
            for model, want in shard_sums.items():
                for shard, (epoch, seq, crc) in sorted(want.items()):
                    got = sums.get(model, {}).get(shard)
                    behind = got is not None and got[:2] != [epoch, seq]
                    if got is None:
                        ok, reason = False, "model missing on replica"
                    elif behind:
                        ok, reason = False, (f"replica at epoch {got[0]} seq {got[1]}, "
                                             f"shard at epoch {epoch} seq {seq}")
                    elif got[2] != crc:
                        ok, reason = False, f"checksum {got[2]:08x} != shard's {crc:08x}"
                    else:
                        ok, reason = True, f"seq {seq} crc {crc:08x}"
                    rows.append({"replica": node.index, "model": model, "shard": int(shard),
                                 "ok": ok, "behind": behind, "reason": reason})
        if not any(r.get("behind") for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def take_snapshots(cluster: ClusterFile, timeout: float = 120.0) -> list[tuple[int, str, int]]:
    """Ask every shard to snapshot now; returns (shard, path, lsn) per shard."""
    out = []
    for node in cluster.shards():
        ch = Channel(node.address)
        try:
            reply = ch.request(TakeSnapshot(), timeout)
            out.append((node.index, reply.path, reply.lsn))
        finally:
            ch.close()
    return out
