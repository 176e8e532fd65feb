"""Every message type: a small dataclass registered by its `op`.

Fields annotated `np.ndarray` travel as raw frames after the msgpack header; their required
dtype is in `ARRAYS`. All other fields travel in the header, and the codec checks each against
its annotation (the annotation is the only declaration of a field's type). Floating-point
arrays named in `FINITE` are checked for NaN/inf on decode. Bump `PROTOCOL` on any
incompatible change; peers agree on it in the `Hello` handshake, every header carries it too,
and decoding refuses a message of another version.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

PROTOCOL = 8  # 8: hello answers a worker's last applied push, pushes count events, pull replies
           # name the worker's last push they hold; 6: model declarations
REGISTRY: dict[str, type["Message"]] = {}


def message(op: str):
    """Class decorator: make a dataclass and register it under `op`."""
    def wrap(cls):
        cls = dataclass(cls)
        cls.op = op
        REGISTRY[op] = cls
        return cls
    return wrap


class Message:
    op: ClassVar[str]
    ARRAYS: ClassVar[dict[str, str]] = {}
    FINITE: ClassVar[tuple[str, ...]] = ()


# --- handshake, errors, admin -----------------------------------------------------------------

@message("hello")
class Hello(Message):
    """`worker`: a worker's id, so a shard answers the last push of it that it applied (a
    worker with a stable id resumes its push numbering after a restart)."""

    protocol: int
    role: str  # who is asking: "worker", "replica", "client", "admin"
    worker: str = ""


@message("hello_reply")
class HelloReply(Message):
    protocol: int
    role: str  # who answers: "shard" or "replica"
    index: int
    n_shards: int
    models: dict  # name -> {"bits": int, ...}
    applied: int = 0  # a shard's last applied push of the hello's worker (0: none)


@message("error")
class ErrorReply(Message):
    code: str
    message: str


@message("status")
class StatusRequest(Message):
    pass


@message("status_reply")
class StatusReply(Message):
    info: dict


@message("shutdown")
class Shutdown(Message):
    pass


@message("ok")
class Ok(Message):
    pass


@message("take_snapshot")
class TakeSnapshot(Message):
    pass


@message("snapshot_taken")
class SnapshotTaken(Message):
    path: str
    lsn: int


@message("checksums")
class ChecksumRequest(Message):
    pass


@message("checksums_reply")
class ChecksumReply(Message):
    """Per model, per shard: [epoch, seq, crc32 of that shard's weights]."""

    sums: dict


@message("declare")
class Declare(Message):
    """A model's input declaration (`common.declaration.Declaration.to_dict`) for a shard to
    keep: the first one a shard gets for a model wins, an identical one is agreed to, another
    is refused (`declaration_conflict`). An empty `declaration` only asks for the one kept.
    Admin-level: trainers send it once, before their first pull."""

    model: str
    declaration: dict


@message("declare_reply")
class DeclareReply(Message):
    """The declaration the shard keeps for the model; empty when the model runs undeclared
    (none was sent, or it was trained before one was: it keeps its spec's features)."""

    model: str
    declaration: dict


# --- worker <-> shard -------------------------------------------------------------------------

@message("pull")
class Pull(Message):
    """`after`: the worker's last push to this shard, which the answer must already include.

    Requests are ordered on one connection, but not across a reconnect: a push written into a
    connection that died is lost while a later pull still queued goes out on the new one. The
    shard refuses such a pull (`missing_push`) instead of answering it without the push.
    """

    ARRAYS = {"keys": "uint64"}
    model: str
    keys: np.ndarray
    worker: str = ""
    after: int = 0


@message("pull_reply")
class PullReply(Message):
    """`values[i]`: the optimizer state of `keys[i]`, shape (k, S), one column per state array
    of the model's optimizer (`common.optim`, its `COLUMNS`).

    `applied`: the highest push number of the pulling worker this shard had applied when it
    answered, so a worker that sent the pull before its latest pushes adds to the values
    exactly the pushes they miss, also when the pull was sent again after a restart and the
    shard has meanwhile applied some of them."""

    ARRAYS = {"values": "float32"}
    model: str
    seq: int
    values: np.ndarray
    applied: int = 0


@message("push")
class Push(Message):
    """Additive changes of the optimizer state of each key: `deltas` has shape (k, S), the
    columns of the pull reply. Workers run the optimizer; a shard adds what they push, so
    pushes of several workers merge in any order.

    `after`: the worker's push to this shard before this one. With several pushes in flight, a
    reconnect can lose push n while push n+1 reaches the restarted shard first; applying n+1
    would make the retry of n look like a duplicate. The shard refuses such a push
    (`missing_push`), so a worker's pushes to a shard are applied exactly once and in order.
    """

    ARRAYS = {"keys": "uint64", "deltas": "float32"}
    FINITE = ("deltas",)
    model: str
    keys: np.ndarray
    deltas: np.ndarray
    worker: str = ""  # with push_no: identifies a retried push so it is applied once
    push_no: int = 0  # increasing per worker; 0 = no duplicate detection
    after: int = 0
    events: int = 0  # events of the batch counted on this shard (one shard of a push counts)


@message("push_ack")
class PushAck(Message):
    """`seq`: the update sequence number whose publication will carry this push's effect."""

    model: str
    seq: int


# --- producer <-> worker (ZeroMQ ingest) -----------------------------------------------------

@message("ingest")
class Ingest(Message):
    """A producer's batch of events, JSON lines in one bytes field. Batch ids count up from 1
    per producer; a worker takes batch n only after n - 1, so a resent batch is recognised."""

    producer: str
    batch_id: int
    events: bytes


@message("ingest_status")
class IngestStatus(Message):
    producer: str


@message("ingest_reply")
class IngestReply(Message):
    """`state` of `batch_id`: "learned" (every shard holds it), "queued" (taken, not yet
    learned), "busy" (the worker's queue is full: send it again later) or "gap" (send again
    from `expect`). `acked`: the producer's highest learned batch id."""

    batch_id: int
    state: str
    acked: int
    expect: int


# --- shard -> replica -------------------------------------------------------------------------

@message("snapshot")
class SnapshotRequest(Message):
    model: str


@message("snapshot_reply")
class SnapshotReply(Message):
    """The shard's whole slice of a model: `values[i]` is slot ``i * n_shards + shard``. No
    rows at all when every value is 0 (a model nothing was pushed to yet: the new epoch a
    declaration starts comes before its first push), so an empty model costs no copy."""

    ARRAYS = {"values": "float32"}
    model: str
    shard: int
    n_shards: int
    epoch: int
    seq: int
    values: np.ndarray
    declaration: dict = field(default_factory=dict)  # the model's, when it has one


@message("update")
class Update(Message):
    """New absolute values of the slots a shard changed, published with a sequence number."""

    ARRAYS = {"keys": "uint64", "values": "float32"}
    model: str
    shard: int
    epoch: int  # changes when the shard restarts; sequence numbers are per epoch
    seq: int
    keys: np.ndarray
    values: np.ndarray


@message("heartbeat")
class Heartbeat(Message):
    shard: int
    epoch: int
    seqs: dict  # model -> latest published seq


# --- client <-> replica -----------------------------------------------------------------------

@message("predict")
class Predict(Message):
    """Instances are feature dicts, as in an event's "features"."""

    model: str
    instances: list


@message("predict_ids")
class PredictIds(Message):
    """Instances already featurized by the caller, in CSR form: instance i has the feature ids
    ``ids[offsets[i]:offsets[i + 1]]`` (the ids `common.features.Featurizer` makes, bias id
    included when the model has one). `offsets` has one entry per instance and one more: it
    starts at 0, never decreases and ends at len(ids). One vectorized scoring pass.

    Only the low 32 bits of each 64-bit id travel: a model reads the slot ``id % 2**bits``
    and no model has more than 32 bits (`common.config`), so they are all it needs, in half
    the bytes."""

    ARRAYS = {"offsets": "int64", "ids": "uint32"}
    model: str
    offsets: np.ndarray
    ids: np.ndarray


@message("predict_reply")
class PredictReply(Message):
    ARRAYS = {"probabilities": "float32"}
    model: str
    version: list  # per-shard sequence numbers the answer was computed with
    staleness_ms: float
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def header_fields(cls: type[Message]) -> list[str]:
    return [f for f in cls.__dataclass_fields__ if f not in cls.ARRAYS]


def as_dict(msg: Message) -> dict[str, Any]:
    return {f: getattr(msg, f) for f in msg.__dataclass_fields__}
