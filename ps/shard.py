"""The shard node: wires the durable `ShardState` and the `Coalescer` to sockets.

One thread, one event loop: requests (ROUTER), the publish-window timer, heartbeats and the
snapshot timer all run in turn, so stores need no locks and a snapshot is always consistent
with the sequence numbers it reports (its state is copied on the loop; only writing the copy,
and the log's interval fsync, happen on helper threads). Each start is a new epoch: replicas
that see an epoch change fetch a fresh snapshot instead of trusting sequence numbers across
restarts.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from common.messages import (ChecksumReply, ChecksumRequest, Declare, DeclareReply, Hello,
                             HelloReply, Pull,
                             PullReply, Push, PushAck, SnapshotReply, SnapshotRequest,
                             SnapshotTaken, TakeSnapshot)
from common.checksum import weights_checksum
from common.config import ClusterSpec
from common.errors import InvalidValue
from common.node import Node
from common.transport import Publisher
from ps.durable import ShardState
from ps.metrics import watch_shard
from ps.publisher import Coalescer

log = logging.getLogger("deltaps.shard")


def shard_dir(spec: ClusterSpec, index: int) -> Path:
    return Path(spec.data_dir) / f"shard-{index}"


class ShardNode(Node):
    """A shard's sockets and timers around its `ShardState` (see the module docstring)."""

    role = "shard"
    log = log

    def __init__(self, spec: ClusterSpec, index: int, address: str, pub_address: str,
                 metrics: tuple[str, int] | None = None):
        self.spec = spec
        self.index = index
        self.epoch = time.time_ns() & ((1 << 62) - 1)
        self.state = ShardState(spec, index, shard_dir(spec, index))
        self.recovery, seqs = self.state.recover()
        self._log_recovery()
        self.stores = self.state.stores
        self.coalescer = Coalescer(index, self.epoch, self.stores, seqs)
        super().__init__(spec, index, address, {
            "pull": self.on_pull,
            "push": self.on_push,
            "snapshot": self.on_snapshot,
            "take_snapshot": self.on_take_snapshot,
            "checksums": self.on_checksums,
            "declare": self.on_declare,
        }, metrics)
        watch_shard(self)
        self.server.before_replies = self.state.wal.commit
        self.publisher = Publisher(pub_address, spec.publish_hwm)
        # no wake-ups for the publish window while nothing waits to be published
        self.loop.every(spec.publish_window_ms / 1000.0, self.publish,
                        idle=lambda: not self.coalescer.has_pending())
        self.loop.every(spec.heartbeat_ms / 1000.0, self.heartbeat)
        if spec.fsync == "interval":
            self.state.wal.start_background_sync(spec.fsync_interval_ms / 1000.0)
        self.loop.every(spec.snapshot_interval_s, self.snapshot_in_background)
        self._snapshotter: threading.Thread | None = None

    def _log_recovery(self) -> None:
        r = self.recovery
        log.info("shard %d recovered in %.3fs: snapshot %s (lsn %d), %d log record(s) replayed",
                 self.index, r.seconds, r.snapshot or "none", r.snapshot_lsn, r.replayed)
        if r.torn_bytes:
            log.warning("cut a torn log tail of %d bytes", r.torn_bytes)
        for problem in r.problems:
            log.error("recovery: %s", problem)

    # --- handlers -----------------------------------------------------------------------------

    def on_hello(self, msg: Hello) -> HelloReply:
        """Also the last push of the asking worker this shard applied: a worker that comes
        back under the same id numbers its pushes on from there (`worker.ps_client`)."""
        reply = super().on_hello(msg)
        reply.applied = self.state.applied.get(msg.worker, 0) if msg.worker else 0
        return reply

    def hello_models(self) -> dict:
        return {name: {"bits": s.spec.bits} for name, s in self.stores.items()}

    def on_pull(self, msg: Pull) -> PullReply:
        self.state.require_applied(msg.worker, msg.after, "pull")
        return PullReply(msg.model, self.coalescer.seq.get(msg.model, 0),
                         self.state.store(msg.model).pull(msg.keys),
                         self.state.applied.get(msg.worker, 0) if msg.worker else 0)

    def on_push(self, msg: Push) -> PushAck:
        if msg.push_no < 0:
            raise InvalidValue("push_no must be >= 0")
        checked = self.state.push(msg.model, msg.keys, msg.deltas, msg.worker, msg.push_no,
                                  msg.after, msg.events)
        if checked is None:  # a retry of a push already applied
            return PushAck(msg.model, self.coalescer.seq[msg.model])
        return PushAck(msg.model, self.coalescer.mark(msg.model, checked.rows,
                                                      checked.columns["w"]))

    def on_snapshot(self, msg: SnapshotRequest) -> SnapshotReply:
        store = self.state.store(msg.model)
        declared = self.state.declarations.get(msg.model)
        weights = store.weights
        values = weights.copy() if store.holds_values() else \
            np.zeros((0, *weights.shape[1:]), np.float32)  # all 0: said with no rows
        return SnapshotReply(msg.model, self.index, self.spec.shards, self.epoch,
                             self.coalescer.seq[msg.model], values,
                             declared.to_dict() if declared else {})

    def on_declare(self, msg: Declare) -> DeclareReply:
        """Keep a model's input declaration (rules in `ps.declared`). A new one starts a new
        epoch: replicas see it in the next heartbeat, fetch a snapshot, and with it the
        declaration they then featurize reads with (before it, the model has no weights)."""
        kept, new = self.state.declare(msg.model, msg.declaration)
        if new:
            self.publish()  # what other models changed goes out under the old epoch
            self.epoch = self.coalescer.epoch = time.time_ns() & ((1 << 62) - 1)
            self.heartbeat()
            log.info("model %s declared by %s: fields %s, crosses %s", msg.model, kept.source,
                     list(kept.fields) or "all", [list(c) for c in kept.crosses])
        return DeclareReply(msg.model, kept.to_dict() if kept else {})

    def on_take_snapshot(self, _msg: TakeSnapshot) -> SnapshotTaken:
        path = self.take_snapshot()
        return SnapshotTaken(str(path), self.state.last_lsn)

    def on_checksums(self, _msg: ChecksumRequest) -> ChecksumReply:
        self.publish()  # what the checksum covers is published before the reply goes out
        return ChecksumReply({name: {str(self.index): [self.epoch, self.coalescer.seq[name],
                                                         weights_checksum(s.weights)]}
                                for name, s in self.stores.items()})

    def status(self) -> dict:
        r = self.recovery
        return {
            "pub_address": self.publisher.address,
            "state": "serving", "epoch": self.epoch,
            "uptime_s": self.uptime_s(),
            "lsn": self.state.last_lsn, "snapshot_lsn": self.state.snapshot_lsn,
            "duplicates": self.state.duplicates, "fsync": self.spec.fsync,
            "recovery": {"snapshot": r.snapshot, "replayed": r.replayed, "seconds": r.seconds,
                         "torn_bytes": r.torn_bytes, "problems": r.problems},
            "models": {name: {"seq": self.coalescer.seq[name], "pushes": s.pushes,
                              "pulls": s.pulls, "slots": s.size,
                              "events": self.state.events.get(name, 0),
                              "declared": self._declared(name)}
                       for name, s in self.stores.items()},
        }

    def _declared(self, model: str) -> dict | None:
        declared = self.state.declarations.get(model)
        return declared.summary() if declared else None

    # --- timers -------------------------------------------------------------------------------

    def publish(self) -> None:
        for update in self.coalescer.flush():
            self.publisher.publish(update)
            self.published_updates.inc()
            self.published_keys.inc(len(update.keys))

    def heartbeat(self) -> None:
        self.publisher.publish(self.coalescer.heartbeat())

    def take_snapshot(self) -> Path:
        """Snapshot now and wait for it (`deltaps snapshot`, shutdown)."""
        self._wait_for_snapshotter()
        start = time.monotonic()
        path = self.state.snapshot(dict(self.coalescer.seq))
        log.info("snapshot %s written in %.3fs", path.name, time.monotonic() - start)
        return path

    def snapshot_in_background(self) -> None:
        """The periodic snapshot: the state is copied on the loop (whole-array copies), then
        written, checksummed and fsynced by a thread, so writing a large model never stalls
        pulls, pushes and publishes. One at a time."""
        if self._snapshotter is not None and self._snapshotter.is_alive():
            log.warning("the previous snapshot is still being written; skipping this one")
            return
        start = time.monotonic()
        capture = self.state.capture(dict(self.coalescer.seq))
        copied = time.monotonic() - start

        def write() -> None:
            try:
                path = self.state.write_snapshot(capture)
            except OSError as exc:
                log.error("snapshot at lsn %d failed, the previous one stays: %s",
                          capture.lsn, exc)
                return
            log.info("snapshot %s written in %.3fs (state copied in %.3fs on the loop)",
                     path.name, time.monotonic() - start, copied)
        self._snapshotter = threading.Thread(target=write, name="snapshot", daemon=True)
        self._snapshotter.start()

    def _wait_for_snapshotter(self) -> None:
        if self._snapshotter is not None:
            self._snapshotter.join()
            self._snapshotter = None

    # --- lifecycle ----------------------------------------------------------------------------

    def starting(self) -> None:
        log.info("shard %d (epoch %d) serving on %s, publishing on %s", self.index, self.epoch,
                 self.server.address, self.publisher.address)

    def stopping(self) -> None:
        self.publish()
        self.take_snapshot()

    def close(self) -> None:
        self._wait_for_snapshotter()
        super().close()
        self.publisher.close()
        self.state.close()
