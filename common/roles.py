"""Who may do what: the ops each role's key may send once CURVE is on.

Membership (a listed key) lets a peer connect; its role then limits what it may ask. A worker
learns (pull, push, declare); a replica follows the shards (snapshot; the update stream is
admitted by role at the handshake, common/transport/curve.py); a client reads predictions; a
producer sends events to a worker's ingest socket (`deltaps train zmq://...`);
an admin may do everything, including what changes or stops a node (shutdown, take_snapshot)
or reveals it (status, checksums). `hello` is every member's: it only says who a node is.
"""
from __future__ import annotations

ROLES = ("worker", "replica", "client", "producer", "admin")
ALL = "*"

ROLE_OPS: dict[str, frozenset[str]] = {
    "worker": frozenset({"hello", "pull", "push", "declare"}),
    "replica": frozenset({"hello", "snapshot"}),
    "client": frozenset({"hello", "predict", "predict_ids"}),
    "producer": frozenset({"hello", "ingest", "ingest_status"}),
    "admin": frozenset({ALL}),
    "inproc": frozenset({ALL}),  # this process's own sockets (a replica's HTTP thread)
}


def permitted(role: str, op: str) -> bool:
    """Whether a peer of `role` may send `op` (an unknown role may send nothing)."""
    ops = ROLE_OPS.get(role, frozenset())
    return ALL in ops or op in ops
