"""The replica node: subscribes to every shard, keeps whole models current, answers predicts.

One thread, one event loop. Applying an update batch and answering a predict request run in
turn, so a read waits at most for one update batch (one fancy-index write) and never sees a
half-applied one.
"""
from __future__ import annotations

import logging
import os
import time

from common import messages as m
from common.config import ClusterSpec, NodeInfo
from common.errors import DeltapsError, ProtocolMismatch, UnknownModel
from common.features import columnarize
from common.transport import Channel, EventLoop, RequestServer, Subscriber
from serving.model import ServingModel

log = logging.getLogger("deltaps.replica")
SNAPSHOT_RETRY_S = 2.0


class ReplicaNode:
    def __init__(self, spec: ClusterSpec, index: int, address: str, shards: list[NodeInfo]):
        if len(shards) != spec.shards:
            raise DeltapsError(f"replica needs the addresses of all {spec.shards} shards")
        self.spec = spec
        self.index = index
        self.started = time.time()
        self.models = {name: ServingModel(model, spec.feature_spec(name), spec.shards)
                       for name, model in spec.models.items()}
        self.handlers = {
            "hello": self.on_hello,
            "predict": self.on_predict,
            "checksums": self.on_checksums,
            "status": self.on_status,
            "shutdown": self.on_shutdown,
        }
        self.server = RequestServer(address, self.handlers, spec.max_message_bytes)
        self.subscriber = Subscriber([s.pub_address for s in shards], spec.max_message_bytes,
                                     spec.publish_hwm)
        self.channels = [Channel(s.address, max_bytes=spec.max_message_bytes) for s in shards]
        self.inflight: dict[tuple[str, int], tuple[int, float]] = {}  # (model, shard) -> rid, t
        self.loop = EventLoop()
        self.loop.add_socket(self.server.sock, self.server.handle_ready)
        self.loop.add_socket(self.subscriber.sock, self.on_updates)
        for k, ch in enumerate(self.channels):
            self.loop.add_socket(ch.sock, lambda k=k: self.on_snapshot_reply(k))
        self.loop.every(0.05, self.request_snapshots)

    # --- keeping models current ---------------------------------------------------------------

    def on_updates(self) -> None:
        for msg in self.subscriber.drain():
            model = self.models.get(msg.model) if isinstance(msg, m.Update) else None
            try:
                if isinstance(msg, m.Heartbeat):
                    for name, seq in msg.seqs.items():
                        if name in self.models and 0 <= msg.shard < self.spec.shards:
                            self.models[name].shards[msg.shard].on_heartbeat(msg.epoch, seq)
                elif model is not None:
                    model.apply_update(msg)
            except DeltapsError as exc:
                log.warning("dropped update: %s", exc)
        self.request_snapshots()

    def request_snapshots(self) -> None:
        """Ask for a snapshot of every (model, shard) that needs one and has none in flight."""
        now = time.monotonic()
        for name, model in self.models.items():
            for sync in model.shards:
                if not sync.snapshot_wanted:
                    continue
                key = (name, sync.shard)
                pending = self.inflight.get(key)
                if pending and now - pending[1] < SNAPSHOT_RETRY_S:
                    continue
                rid = self.channels[sync.shard].send(m.SnapshotRequest(name))
                self.inflight[key] = (rid, now)

    def on_snapshot_reply(self, shard: int) -> None:
        ch = self.channels[shard]
        while ch.sock.poll(0):
            try:
                reply = ch.recv_any()
            except DeltapsError as exc:
                log.warning("snapshot from shard %d failed: %s", shard, exc)
                continue
            if not isinstance(reply, m.SnapshotReply) or reply.model not in self.models:
                continue
            key = (reply.model, shard)
            self.inflight.pop(key, None)
            try:
                self.models[reply.model].apply_snapshot(shard, reply.n_shards, reply.epoch,
                                                        reply.seq, reply.values)
            except DeltapsError as exc:
                log.warning("refused snapshot: %s", exc)
                continue
            if self.models[reply.model].ready:
                log.info("model %s ready at version %s", reply.model,
                         self.models[reply.model].version)

    # --- handlers -----------------------------------------------------------------------------

    def model(self, name: str) -> ServingModel:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(f"unknown model {name!r}; replica {self.index} serves "
                               f"{sorted(self.models)}") from None

    def on_hello(self, msg: m.Hello) -> m.HelloReply:
        if msg.protocol != m.PROTOCOL:
            raise ProtocolMismatch(f"protocol version mismatch: {msg.role} speaks {msg.protocol}, "
                                   f"replica {self.index} speaks {m.PROTOCOL}")
        return m.HelloReply(m.PROTOCOL, "replica", self.index, self.spec.shards,
                            {name: {"bits": mm.spec.bits, "ready": mm.ready}
                             for name, mm in self.models.items()})

    def on_predict(self, msg: m.Predict) -> m.PredictReply:
        model = self.model(msg.model)
        probabilities = model.score(columnarize(msg.instances, with_labels=False))
        return m.PredictReply(msg.model, model.version, model.staleness_ms(), probabilities)

    def on_checksums(self, _msg: m.ChecksumRequest) -> m.ChecksumReply:
        return m.ChecksumReply({name: mm.checksums() for name, mm in self.models.items()})

    def on_status(self, _msg: m.StatusRequest) -> m.StatusReply:
        return m.StatusReply({
            "role": "replica", "index": self.index, "pid": os.getpid(),
            "address": self.server.address,
            "state": "ready" if all(mm.ready for mm in self.models.values()) else "syncing",
            "uptime_s": round(time.time() - self.started, 1),
            "models": {name: {"ready": mm.ready, "version": mm.version,
                              "staleness_ms": mm.staleness_ms(), "gaps": sum(s.gaps for s in mm.shards),
                              "updates": mm.updates_applied}
                       for name, mm in self.models.items()},
        })

    def on_shutdown(self, _msg: m.Shutdown) -> m.Ok:
        self.loop.stop()
        return m.Ok()

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        self.loop.install_signal_handlers()
        log.info("replica %d serving on %s", self.index, self.server.address)
        self.request_snapshots()
        try:
            self.loop.run()
        finally:
            self.close()
            log.info("replica %d stopped", self.index)

    def close(self) -> None:
        self.server.close()
        self.subscriber.close()
        for ch in self.channels:
            ch.close()
