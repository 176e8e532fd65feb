"""A shard's durable state: model stores, write-ahead log, snapshots, duplicate detection.

The order for every push is: validate -> skip if already applied -> refuse if the worker's
push before it is not applied yet -> append to the log ->
apply -> (acknowledge after the group commit). The log holds each push as the wire codec
encodes it, and recovery loads the newest good snapshot and replays the log after it through
the codec's decoding and the same apply path, so a recovered shard is bit-identical to one
that never stopped. The duplicate table (highest push number applied per worker) is saved in
snapshots and rebuilt by replay, so a push retried across a restart is still applied once.
So is the count of events learned per model (each push names the events of its batch that
this shard counts), which makes "every event learned exactly once" checkable from outside.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import wire
from common.config import ClusterSpec
from common.declaration import Declaration
from common.errors import ConfigError, DeltapsError, InvalidValue, MissingPush, find_model
from common.messages import Push
from ps.declared import Declarations
from ps.snapshot import load_newest_good, snapshot_lsns, write_snapshot
from ps.deep_store import make_store
from ps.store import CheckedPush, ModelShard
from ps.wal import ReadReport, WriteAheadLog, frame_parts, unpack_frames

log = logging.getLogger("deltaps.durable")


@dataclass
class Capture:
    """A shard's state copied at one log position, ready to be written as a snapshot."""

    lsn: int
    header: dict
    arrays: dict[str, dict[str, np.ndarray]]


@dataclass
class RecoveryReport:
    snapshot: str | None = None
    snapshot_lsn: int = 0
    replayed: int = 0
    torn_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


class ShardState:
    """Everything a shard must not lose, and the rules that keep it exact: a push is logged
    before it is applied, applied at most once per (worker, push number), never ahead of the
    worker's push before it; a snapshot records how far the log it replaces reached. Plain
    object, no sockets: the shard node feeds it decoded requests and tests drive it directly."""

    def __init__(self, spec: ClusterSpec, index: int, directory: str | Path):
        self.spec = spec
        self.index = index
        self.dir = Path(directory)
        self.declarations = Declarations(self.dir)
        self.stores = {name: self._new_store(name) for name in spec.models}
        self.applied: dict[str, int] = {}  # worker -> highest push_no applied
        self.events: dict[str, int] = {name: 0 for name in spec.models}  # learned, per model
        self.wal = WriteAheadLog(self.dir / "wal", spec.fsync, spec.wal_segment_mb << 20)
        self.last_lsn = 0
        self.snapshot_lsn = 0
        self.duplicates = 0

    def store(self, model: str) -> ModelShard:
        return find_model(self.stores, model, f"shard {self.index} holds")

    def _new_store(self, name: str) -> ModelShard:
        """An empty store of the model as its declaration (if any) makes it."""
        model = self.spec.models[name]
        declared = self.declarations.get(name)
        if declared is not None:
            model = declared.model_spec(model)
        return make_store(model, self.index, self.spec.shards, self.spec.max_delta)

    # --- input declarations -------------------------------------------------------------------

    def declare(self, model: str, offered: dict) -> tuple[Declaration | None, bool]:
        """Offer a model's input declaration (`ps.declared` has the rules; an empty one only
        asks); returns (the one kept, whether it is new). A new one is on disk before this
        returns, and the model's store is rebuilt with its optimizer (it is empty: a trained
        model takes no declaration)."""
        store = self.store(model)
        proposal = Declaration.from_dict(offered) if offered else None
        kept, new = self.declarations.offer(model, self.spec.models[model], proposal,
                                            store.holds_values())
        if new:
            declared = kept.model_spec(self.spec.models[model])
            if store.keeps_layout_for(declared):  # the same arrays: only the spec is new
                store.spec = declared
            else:
                self.stores[model] = self._new_store(model)
        return kept, new

    # --- pushes -------------------------------------------------------------------------------

    def push(self, model: str, keys: np.ndarray, deltas: np.ndarray, worker: str = "",
             push_no: int = 0, after: int = 0, events: int = 0) -> CheckedPush | None:
        """Apply a push durably; returns what it changed (rows and their new values), or None
        for a duplicate. `after` is the worker's previous push here: refusing to skip it keeps
        "highest applied" exact. `deltas` are finite: the codec refused any push that was not
        when decoding it."""
        store = self.store(model)
        checked = store.check_push(keys, deltas)
        if worker and push_no <= self.applied.get(worker, 0):
            self.duplicates += 1
            return None
        self.require_applied(worker, after, f"push {push_no}")
        if events < 0:
            raise InvalidValue(f"events must be >= 0, not {events}")
        frames = wire.encode(Push(model, keys, deltas, worker, push_no, after, events))
        self.last_lsn = self.wal.append(frame_parts(frames))
        store.apply(checked)
        self.events[model] += events
        if worker:
            self.applied[worker] = push_no
        return checked

    def require_applied(self, worker: str, push_no: int, request: str) -> None:
        """Refuse `request` (a pull or push that must follow `worker`'s push `push_no`) while
        that push has not been applied: it was lost in a reconnect and is coming again."""
        if worker and self.applied.get(worker, 0) < push_no:
            raise MissingPush(f"{request} follows push {push_no} of worker {worker}, "
                              "which has not arrived")

    # --- snapshots and recovery ---------------------------------------------------------------

    def snapshot(self, seqs: dict[str, int]) -> Path:
        """Write every model's state at the current log position (blocking)."""
        return self.write_snapshot(self.capture(seqs))

    def capture(self, seqs: dict[str, int]) -> "Capture":
        """A copy of everything a snapshot holds, taken now (copies, and FTRL's weights
        computed: far quicker than writing it); `write_snapshot` may then run on another thread
        while pushes go on."""
        self.wal.sync()  # the log up to this point survives whatever happens to the snapshot
        header = {"shard": self.index, "n_shards": self.spec.shards, "seqs": dict(seqs),
                  "applied": dict(self.applied), "events": dict(self.events),
                  "models": {n: {"bits": s.spec.bits, "optimizer": s.spec.optimizer.name}
                             for n, s in self.stores.items()}}
        arrays = {n: s.snapshot_arrays() for n, s in self.stores.items()}
        return Capture(self.last_lsn, header, arrays)

    def write_snapshot(self, capture: "Capture") -> Path:
        """Write a captured state atomically, then drop the log segments it makes redundant
        (safe from any thread: only whole segments before the kept snapshots go)."""
        path = write_snapshot(self.dir / "snapshots", capture.lsn, capture.header,
                              capture.arrays, keep=self.spec.snapshots_kept)
        self.snapshot_lsn = max(self.snapshot_lsn, capture.lsn)
        self.wal.drop_before(min(snapshot_lsns(self.dir / "snapshots")))
        return path

    def recover(self) -> tuple[RecoveryReport, dict[str, int]]:
        """Load the newest good snapshot and replay the log; returns report and publish seqs."""
        start = time.monotonic()
        report = RecoveryReport()
        snap, refused = load_newest_good(self.dir / "snapshots")
        report.problems.extend(refused)
        seqs: dict[str, int] = {}
        after = 0
        if snap is not None:
            self._load(snap.header, snap.arrays)
            after = snap.lsn
            seqs = {k: v for k, v in snap.header["seqs"].items() if k in self.stores}
            report.snapshot, report.snapshot_lsn = snap.path.name, snap.lsn
        read = ReadReport()
        for lsn, payload in self.wal.replay(after, read):
            push = _logged_push(lsn, payload)
            store = self.stores.get(push.model)
            if store is None:
                raise ConfigError(f"log record {lsn} is for model {push.model!r}, which the "
                                  "spec no longer has; restore the model or move the log aside")
            try:
                store.apply(store.check_push(push.keys, push.deltas))
            except InvalidValue as exc:  # it passed these checks when it was logged
                raise ConfigError(f"log record {lsn} no longer applies ({exc}): was the spec's "
                                  "max_delta lowered? Restore it to recover") from None
            self.events[push.model] += push.events
            if push.worker:
                self.applied[push.worker] = max(push.push_no, self.applied.get(push.worker, 0))
            self.last_lsn = lsn
        self.last_lsn = max(self.last_lsn, after)
        self.snapshot_lsn = after
        report.replayed, report.torn_bytes = read.records, read.torn_bytes
        report.problems.extend(read.corrupt)
        report.seconds = round(time.monotonic() - start, 3)
        return report, seqs

    def _load(self, header: dict, arrays: dict) -> None:
        if header["shard"] != self.index or header["n_shards"] != self.spec.shards:
            raise ConfigError(f"snapshot is of shard {header['shard']} of {header['n_shards']}, "
                              f"this is shard {self.index} of {self.spec.shards}")
        for name, store in self.stores.items():
            saved = header["models"].get(name)
            if saved is None:
                log.warning("model %s is new: not in the snapshot, starts empty", name)
                continue
            if saved["bits"] != store.spec.bits or saved["optimizer"] != store.spec.optimizer.name:
                raise ConfigError(f"model {name!r} was saved with bits={saved['bits']}, "
                                  f"optimizer={saved['optimizer']}; the spec now says "
                                  f"bits={store.spec.bits}, optimizer={store.spec.optimizer.name}")
            for key, array in arrays[name].items():
                if key in store.derived:  # computed from the others
                    continue
                mine = store.state.get(key)
                if mine is None or mine.size != array.size:
                    raise ConfigError(f"model {name!r} was saved with another shape: its {key!r} "
                                      f"has {array.size} values, the spec's model "
                                      f"{mine.size if mine is not None else 'none'}")
                mine[...] = array.reshape(mine.shape)  # a view into the store's block
        self.applied = dict(header.get("applied", {}))
        self.events.update({k: v for k, v in header.get("events", {}).items()
                            if k in self.events})

    def close(self) -> None:
        self.wal.close()


def _logged_push(lsn: int, payload: bytes) -> Push:
    """The push a log record holds, decoded (and so validated) by the wire codec."""
    try:
        push, _rid = wire.decode(unpack_frames(payload))
    except (DeltapsError, ValueError) as exc:
        raise ConfigError(f"log record {lsn} does not decode as a push ({exc}); it was written "
                          "by a release speaking another protocol version, or is damaged "
                          "despite its checksum: recover with the release that wrote it, or "
                          "move the log aside") from None
    if not isinstance(push, Push):
        raise ConfigError(f"log record {lsn} holds a {push.op!r} message, not a push")
    return push
