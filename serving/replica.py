"""The replica node: subscribes to every shard, keeps whole models current, answers predicts.

One thread, one zmq event loop own the models: applying updates and answering reads run in
turn, so no lock is ever taken around the weights. Predict requests found waiting together on
the socket are featurized and scored in one vectorized pass per model and the answers split
(per-request overhead dominates single-instance reads, so ten requests scored together cost
each far less than one alone); a request with a bad
instance among them is then answered on its own. The optional HTTP server (serving/http.py)
runs in its own thread with its own asyncio loop and forwards every request to this loop's
request socket over inproc, so it never touches a model either.

What a read sees (the guarantee, precisely):

- **Per-slot atomicity.** A model's weights are one float32 per slot, written in place by
  numpy; a read never sees a slot half written (there are no multi-float rows to tear).
- **Declared version = last fully applied batch.** Every answer carries, per shard, the
  sequence number of the last update batch that was *completely* written. An update batch
  larger than `APPLY_CHUNK` keys is written in chunks; between chunks the replica answers the
  reads waiting on its socket. Such a read is computed from weights that contain everything
  up to its declared version plus possibly some slots of the one batch being written; it never
  declares that batch before all of it is written. Checksums (`deltaps verify`) are only ever
  taken between batches.
- **A read waits for at most one chunk of writing** (64k keys: about a millisecond here)
  behind updates, however large an update batch is or however many have queued up, plus the
  validation of the one update message being accepted (a vectorized pass over its keys).
  Snapshots are fetched asynchronously; writing one (only needed while a shard is out of
  sync, when that model refuses reads anyway) is a single strided copy and is not chunked.
- A model answers only while every shard of it is in sync (Clone pattern, serving/sync.py);
  otherwise reads are refused at once with not_ready.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from common.messages import (ChecksumReply, ChecksumRequest, Heartbeat, Predict, PredictIds,
                             PredictReply, SnapshotReply, SnapshotRequest, Update)
from common.config import ClusterSpec, NodeInfo
from common.declaration import Declaration
from common.errors import DeltapsError, find_model
from common.node import Node
from common.transport import Channel, Subscriber
from serving.cache import PredictionCache, ids_key, instances_key
from serving.deep_model import make_model
from serving.metrics import watch_replica
from serving.model import ServingModel, check_csr

log = logging.getLogger("deltaps.replica")
SNAPSHOT_RETRY_S = 2.0
APPLY_CHUNK = 1 << 16  # keys written per step of a large update before waiting reads are served
LATENCY_SAMPLES = 2048  # predict handling times kept for the status percentiles


@dataclass(slots=True)
class PendingWrite:
    """An accepted update still being written into its model, `written` keys so far."""

    model: ServingModel
    update: Update
    written: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotAsk:
    """A snapshot request in flight to a shard: its request id and when it was sent."""

    rid: int
    sent_at: float


class ReplicaNode(Node):
    """A replica's sockets and timers around its `ServingModel`s (see the module docstring)."""

    role = "replica"
    log = log

    def __init__(self, spec: ClusterSpec, index: int, address: str, shards: list[NodeInfo],
                 http: tuple[str, int] | None = None, metrics: tuple[str, int] | None = None):
        if len(shards) != spec.shards:
            raise DeltapsError(f"replica needs the addresses of all {spec.shards} shards")
        self.models = {name: make_model(model, spec.feature_spec(name), spec.shards)
                       for name, model in spec.models.items()}
        super().__init__(spec, index, address, {
            "predict": self.on_predict,
            "predict_ids": self.on_predict_ids,
            "checksums": self.on_checksums,
        }, metrics)
        self.server.batch_handlers = {
            "predict": self.metrics.instrument_batch("predict", self.on_predict_batch)}
        watch_replica(self)
        self.inproc_address = self.server.bind(f"inproc://deltaps-replica-{index}-{id(self):x}")
        self.subscriber = Subscriber([s.pub_address for s in shards], spec.max_message_bytes,
                                     spec.publish_hwm)
        self.channels = [Channel(s.address, max_bytes=spec.max_message_bytes) for s in shards]
        self.inflight: dict[tuple[str, int], SnapshotAsk] = {}  # by (model, shard)
        self.pending: deque[PendingWrite] = deque()
        self.apply_chunk = APPLY_CHUNK
        self.interleaved_reads = 0  # times reads were answered between update chunks or messages
        self.cache = PredictionCache(spec.prediction_cache_ttl_ms, spec.prediction_cache_entries)
        self.served = 0  # predict requests answered with probabilities
        self.instances = 0
        self.predict_errors = 0
        self.coalesced = 0  # predict requests answered together with others in one pass
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.http = None
        if http is not None:
            from serving.http import HttpServer, http_security  # aiohttp: only to serve HTTP
            self.http = HttpServer(http[0], http[1], self.inproc_address, spec.max_message_bytes,
                                   **http_security(spec.security))
        self.loop.watch(self.subscriber, self.on_updates)
        for k, ch in enumerate(self.channels):
            self.loop.watch(ch, lambda k=k: self.on_snapshot_reply(k))
        self.loop.every(0.05, self.request_snapshots, idle=self.wants_no_snapshot)

    # --- keeping models current ---------------------------------------------------------------

    def on_updates(self) -> None:
        for msg in self.subscriber.drain():
            model = self.models.get(msg.model) if isinstance(msg, Update) else None
            try:
                if isinstance(msg, Heartbeat):
                    for name, seq in msg.seqs.items():
                        if name in self.models and 0 <= msg.shard < self.spec.shards:
                            self.models[name].shards[msg.shard].on_heartbeat(msg.epoch, seq)
                elif model is not None:
                    self.queue_writes(model, model.accept_update(msg))
            except DeltapsError as exc:
                log.warning("dropped update: %s", exc)
            self.serve_waiting_reads()
        self.request_snapshots()

    def queue_writes(self, model: ServingModel, updates) -> None:
        """Write accepted updates (after those already queued), answering reads in between."""
        self.pending.extend(PendingWrite(model, u) for u in updates)
        self.apply_pending()

    def apply_pending(self, interleave: bool = True) -> None:
        """Write accepted updates in order, `apply_chunk` keys at a time; between chunks, answer
        the requests waiting on the request socket (`interleave`). Re-entrant: a handler
        called between chunks may finish the queue itself (checksums do)."""
        while self.pending:
            item = self.pending[0]
            update = item.update
            stop = min(item.written + self.apply_chunk, update.keys.size)
            item.model.write(update, item.written, stop)
            item.written = stop
            if stop >= update.keys.size:
                self.pending.popleft()
                item.model.finish(update)
            if interleave and self.pending:
                self.serve_waiting_reads()

    def serve_waiting_reads(self) -> None:
        """Answer the requests waiting on the request socket now (between two chunks or two
        update messages), so a read never waits behind more than one of them."""
        if self.server.waiting():
            self.interleaved_reads += 1
            self.server.handle_ready()

    def wants_no_snapshot(self) -> bool:
        """No model wants a snapshot of any shard (the snapshot timer has nothing to do)."""
        return not any(sync.snapshot_wanted for model in self.models.values()
                       for sync in model.shards)

    def request_snapshots(self) -> None:
        """Ask for a snapshot of every (model, shard) that needs one and has none in flight."""
        now = time.monotonic()
        for name, model in self.models.items():
            for sync in model.shards:
                if not sync.snapshot_wanted:
                    continue
                key = (name, sync.shard)
                asked = self.inflight.get(key)
                if asked and now - asked.sent_at < SNAPSHOT_RETRY_S:
                    continue
                rid = self.channels[sync.shard].send(SnapshotRequest(name))
                self.inflight[key] = SnapshotAsk(rid, now)

    def on_snapshot_reply(self, shard: int) -> None:
        ch = self.channels[shard]
        while ch.poll(0):
            try:
                reply = ch.recv_any()
            except DeltapsError as exc:
                log.warning("snapshot from shard %d failed: %s", shard, exc)
                continue
            if not isinstance(reply, SnapshotReply) or reply.model not in self.models:
                continue
            key = (reply.model, shard)
            self.inflight.pop(key, None)
            model = self.models[reply.model]
            try:
                if reply.declaration:
                    model.declare(Declaration.from_dict(reply.declaration))
                buffered = model.load_snapshot(shard, reply.n_shards, reply.epoch, reply.seq,
                                               reply.values)
            except DeltapsError as exc:
                log.warning("refused snapshot: %s", exc)
                continue
            self.queue_writes(model, buffered)
            if model.ready:
                log.info("model %s ready at version %s", reply.model, model.version)

    # --- handlers -----------------------------------------------------------------------------

    def model(self, name: str) -> ServingModel:
        return find_model(self.models, name, f"replica {self.index} serves")

    def hello_models(self) -> dict:
        return {name: {"bits": model.spec.bits, "ready": model.ready}
                for name, model in self.models.items()}

    def on_predict(self, msg: Predict) -> PredictReply:
        reply = self.on_predict_batch([msg])[0]
        if isinstance(reply, DeltapsError):
            raise reply
        return reply

    def on_predict_batch(self, msgs: list[Predict]) -> list[PredictReply | DeltapsError]:
        """Answer the predict requests that were waiting together: those for one model are
        featurized and scored in one vectorized pass (per-request overhead dominates small
        requests), then split. If one of them holds a bad instance, each is scored on its own,
        so that only the bad one is refused, with an error naming its instance."""
        t0 = time.perf_counter()
        out: list = [None] * len(msgs)
        keys: list = [None] * len(msgs)
        todo: dict[str, list[int]] = {}
        for i, msg in enumerate(msgs):
            try:
                model = self.model(msg.model)
                model.check_ready()
            except DeltapsError as exc:
                out[i] = exc
                continue
            if self.cache.enabled:
                keys[i] = instances_key(msg.instances)
                hit = self.cache.get(msg.model, keys[i], model.version_key())
                if hit is not None:
                    out[i] = self._reply(msg.model, model, hit, t0)
                    continue
            todo.setdefault(msg.model, []).append(i)
        for name, idx in todo.items():
            model = self.models[name]
            together = None
            if len(idx) > 1:
                try:
                    together = model.score_events([x for i in idx for x in msgs[i].instances])
                except DeltapsError:
                    together = None
            start = 0
            for i in idx:
                try:
                    if together is not None:
                        n = len(msgs[i].instances)
                        probabilities = together[start:start + n]
                        start += n
                    else:
                        probabilities = model.score_events(msgs[i].instances)
                except DeltapsError as exc:
                    out[i] = exc
                    continue
                self.cache.put(name, keys[i], model.version_key(), probabilities)
                out[i] = self._reply(name, model, probabilities, t0)
        self.coalesced += len(msgs) if len(msgs) > 1 else 0
        self.predict_errors += sum(isinstance(r, DeltapsError) for r in out)
        return out

    def on_predict_ids(self, msg: PredictIds) -> PredictReply:
        t0 = time.perf_counter()
        try:
            model = self.model(msg.model)
            check_csr(msg.offsets, msg.ids, self.spec.max_message_bytes // 8)
            model.check_ready()
            key = ids_key(msg.offsets, msg.ids) if self.cache.enabled else None
            probabilities = self.cache.get(msg.model, key, model.version_key())
            if probabilities is None:
                probabilities = model.score_csr(msg.offsets, msg.ids)
                self.cache.put(msg.model, key, model.version_key(), probabilities)
            return self._reply(msg.model, model, probabilities, t0)
        except DeltapsError:
            self.predict_errors += 1
            raise

    def _reply(self, name: str, model: ServingModel, probabilities, t0: float) -> PredictReply:
        self.served += 1
        self.instances += len(probabilities)
        self.latencies.append(time.perf_counter() - t0)
        return PredictReply(name, model.version, model.staleness_ms(), probabilities)

    def on_checksums(self, _msg: ChecksumRequest) -> ChecksumReply:
        self.apply_pending(interleave=False)  # only ever checksum whole update batches
        return ChecksumReply({name: model.checksums() for name, model in self.models.items()})

    def predict_ms(self) -> dict:
        if not self.latencies:
            return {"p50": None, "p99": None, "samples": 0}
        p50, p99 = np.percentile(np.fromiter(self.latencies, float), [50, 99]) * 1000.0
        return {"p50": round(float(p50), 3), "p99": round(float(p99), 3),
                "samples": len(self.latencies)}

    def status(self) -> dict:
        return {
            "http_address": self.http.url if self.http else "",
            "state": "ready" if all(model.ready for model in self.models.values()) else "syncing",
            "uptime_s": self.uptime_s(),
            "requests": self.server.requests,
            "errors": sum(self.server.errors.values()),
            "errors_by_code": dict(self.server.errors),
            "predict": {"served": self.served, "instances": self.instances,
                        "refused": self.predict_errors, "coalesced": self.coalesced,
                        "ms": self.predict_ms()},
            "cache": self.cache.stats(),
            "interleaved_reads": self.interleaved_reads,
            "models": {name: {"ready": model.ready, "version": model.version,
                              "declared": model.declared.summary() if model.declared else None,
                              "staleness_ms": model.staleness_ms(), "gaps": sum(s.gaps for s in model.shards),
                              "updates": model.updates_applied}
                       for name, model in self.models.items()},
        }

    # --- lifecycle ----------------------------------------------------------------------------

    def security(self) -> dict:
        out = super().security()
        if self.http is not None:
            out["http_unauthorized"] = self.http.unauthorized
        return out

    def starting(self) -> None:
        if self.http is not None:
            self.http.start()
            log.info("replica %d serving HTTP on %s", self.index, self.http.url)
        log.info("replica %d serving on %s", self.index, self.server.address)
        self.request_snapshots()

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
        super().close()
        self.subscriber.close()
        for ch in self.channels:
            ch.close()
