"""A worker's connection to every shard: split keys by shard, talk to all shards at once.

Requests go out without waiting (`pull_async`, `push_async` return a `Pending`), so a trainer
can featurize the next batch while the shards work. Each shard has one DEALER socket and a
shard handles one connection's requests in order: a pull sent after a push sees that push
applied, which keeps a single worker's run deterministic however far it pipelines.

A shard that stays silent for `retry_s` (growing to 8 s) is sent every request still
outstanding on its socket again, in their original order, until `timeout`: the worker blocks
while a shard restarts instead of dropping work. A new connection to a shard (after a restart,
or after a cut link made the transport's heartbeats drop the old one) means what was in
flight on the old one is lost, so the outstanding requests go again at once: training resumes
as soon as the shard is reachable, not when the back-off next expires. Pushes carry (worker
id, push number), so a push whose acknowledgement was lost and that is sent again is applied
once; pulls and pushes name the last push sent to their shard, which the shard must have
applied first.

A worker id is random per process unless the caller gives a stable one (a stream consumer's
name, a followed file's path): hello then asks each shard for the last push of that id it
applied, and the numbering goes on from there, so a restarted worker's pushes are neither taken
for duplicates nor refused as following a push that never came.

The first answer to any copy of a request is the one taken: a shard that was only slow answers
the original first, where it stood among the worker's requests (a pull sent before a push is
answered without that push, which its copy sent again after the push would hold).
"""
from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from common.messages import Declare, Hello, Message, PROTOCOL, Pull, Push
from common.config import NodeInfo
from common.errors import DeltapsError, MissingPush, Timeout
from common.rows import as_rows, of_rows
from common.sharding import split_by_shard
from common.transport import Channel, readable

log = logging.getLogger("deltaps.worker")
MAX_RETRY_S = 8.0
_SPLITS_KEPT = 4


@dataclass
class _Request:
    token: int
    shard: int
    msg: Message
    rid: int
    reply: Message | None = None
    earlier: list[int] = field(default_factory=list)  # rids of the copies sent before `rid`
    error: Exception | None = None


class Pending:
    """Requests in flight to several shards; `wait()` gathers and combines their replies."""

    def __init__(self, client: "PSClient", tokens: list[int], combine: Callable[[list], object]):
        self.client, self.tokens, self.combine = client, tokens, combine

    def wait(self):
        return self.combine(self.client.wait(self.tokens))


class PSClient:
    """Pull and push sparse rows of any model; keys must be sorted unique slots (uint64)."""

    def __init__(self, shards: list[NodeInfo], timeout: float = 300.0, retry_s: float = 1.0,
                 max_bytes: int | None = None, worker_id: str | None = None):
        self.timeout = timeout
        self.retry_s = retry_s
        self.worker_id = worker_id or uuid.uuid4().hex[:16]
        self.push_no = 0
        self.retries = 0
        self.channels = [Channel(s.address, max_bytes=max_bytes, monitor=True) for s in shards]
        self.n_shards = len(shards)
        self._splits: deque = deque(maxlen=_SPLITS_KEPT)  # (keys, parts) lately asked about
        self._tokens = itertools.count()
        self._requests: dict[int, _Request] = {}  # token -> request, in send order
        self._rid_token: list[dict[int, int]] = [{} for _ in shards]
        self._heard: list[float] = [time.monotonic()] * len(shards)
        self._backoff: list[float] = [retry_s] * len(shards)
        self._last_push: list[int] = [0] * len(shards)  # push_no last sent to each shard
        self._connections: list[int] = [0] * len(shards)  # connections seen come up, per shard
        hellos = self.wait([self._send(k, Hello(PROTOCOL, "worker", self.worker_id))
                            for k in range(self.n_shards)])
        for k, hello in enumerate(hellos):
            if hello.n_shards != self.n_shards or hello.index != k:
                raise DeltapsError(f"shard at {self.channels[k].address} is shard {hello.index} "
                                   f"of {hello.n_shards}, expected {k} of {self.n_shards}")
        self.models = hellos[0].models
        self._last_push = [hello.applied for hello in hellos]
        self.push_no = max(self._last_push)

    # --- request bookkeeping ------------------------------------------------------------------

    def _send(self, shard: int, msg: Message) -> int:
        self._check_reconnected(shard)  # requests before this one go again before it
        token = next(self._tokens)
        if not any(r.shard == shard and r.reply is None and r.error is None
                   for r in self._requests.values()):
            self._heard[shard] = time.monotonic()  # the silence clock starts now
        rid = self.channels[shard].send(msg)
        self._requests[token] = _Request(token, shard, msg, rid)
        self._rid_token[shard][rid] = token
        return token

    def wait(self, tokens: list[int]) -> list[Message]:
        """Replies to `tokens` (in that order), resending to silent shards; raises on errors."""
        start = time.monotonic()
        while True:
            waiting = [t for t in tokens if self._requests[t].reply is None
                       and self._requests[t].error is None]
            if not waiting:
                break
            now = time.monotonic()
            if now - start > self.timeout:
                silent = sorted({self._requests[t].shard for t in waiting})
                raise Timeout(f"shard(s) {silent} did not answer for {self.timeout:.0f}s")
            busy = sorted({r.shard for r in self._requests.values()
                           if r.reply is None and r.error is None})
            for k in busy:
                if not self._check_reconnected(k) and now - self._heard[k] >= self._backoff[k]:
                    # replies that came while the worker was busy elsewhere are not silence
                    self._collect(k)
                    if now - self._heard[k] >= self._backoff[k]:
                        self._resend(k, now)
            next_resend = min(self._heard[k] + self._backoff[k] for k in busy)
            for j in readable([self.channels[k] for k in busy],
                              max(0.0, min(next_resend - time.monotonic(), 0.5)), events=True):
                self._collect(busy[j])
        out = []
        for t in tokens:
            req = self._requests.pop(t)
            for rid in (req.rid, *req.earlier):
                self._rid_token[req.shard].pop(rid, None)
            if req.error is not None:
                raise req.error
            out.append(req.reply)
        return out

    def _collect(self, shard: int) -> None:
        ch = self.channels[shard]
        while ch.poll(0):
            msg, rid = ch.read()
            self._heard[shard] = time.monotonic()  # any answer: the shard is alive
            token = self._rid_token[shard].get(rid)
            if token is None:
                continue  # a reply to a request already handed back
            req = self._requests[token]
            if req.reply is not None or req.error is not None:
                continue  # a copy answered first
            try:
                req.reply = ch.unwrap(msg)
            except DeltapsError as exc:
                if rid != req.rid:
                    continue  # an earlier copy refused: the latest copy's answer decides
                if isinstance(exc, MissingPush):
                    if self._unanswered_push(shard, req.msg.after):
                        # that push was lost in a reconnect: send it and everything after
                        # it again, in order
                        self._resend(shard, time.monotonic())
                        continue
                    exc = DeltapsError(
                        f"shard {shard} no longer has push {req.msg.after} of worker "
                        f"{self.worker_id}, which it acknowledged: its state was lost or "
                        "restored from an older copy; sending again cannot repair that")
                req.error = exc
            self._backoff[shard] = self.retry_s

    def _unanswered_push(self, shard: int, push_no: int) -> bool:
        """Whether push `push_no` to `shard` is still waiting for its acknowledgement."""
        return any(r.shard == shard and r.reply is None and r.error is None
                   and isinstance(r.msg, Push) and r.msg.push_no == push_no
                   for r in self._requests.values())

    def _check_reconnected(self, shard: int) -> bool:
        """If a new connection to the shard came up since the last look while requests were
        outstanding, send them again now (the old connection took them with it); True then."""
        n = self.channels[shard].connections()
        seen, self._connections[shard] = self._connections[shard], n
        if n == seen or seen == 0:  # nothing new, or the first connection
            return False
        if not any(r.shard == shard and r.reply is None and r.error is None
                   for r in self._requests.values()):
            return False
        self._backoff[shard] = self.retry_s / 2  # a fresh connection starts the back-off over
        self._resend(shard, time.monotonic(), "reconnected")
        return True

    def _resend(self, shard: int, now: float, why: str = "") -> None:
        """Send every unanswered request of this shard again, oldest first."""
        pending = [r for r in self._requests.values()
                   if r.shard == shard and r.reply is None and r.error is None]
        log.warning("shard %d %s; sending %d request(s) again", shard,
                    why or f"silent for {now - self._heard[shard]:.1f}s", len(pending))
        for req in pending:
            req.earlier.append(req.rid)  # its answer, if it comes, is still the one to take
            req.rid = self.channels[shard].send(req.msg)
            self._rid_token[shard][req.rid] = req.token
            self.retries += 1
        self._heard[shard] = now
        self._backoff[shard] = min(self._backoff[shard] * 2, MAX_RETRY_S)

    # --- pull and push ------------------------------------------------------------------------

    def _parts(self, keys: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(shard, indices into `keys`) for each shard with keys. The splits of the last few
        key arrays asked about are kept: a trainer pushes the very array it pulled, a batch or
        two later (arrays of keys are never changed once made)."""
        for seen, parts in self._splits:
            if seen is keys:
                return parts
        parts = [(k, idx) for k, idx in enumerate(split_by_shard(keys, self.n_shards))
                 if idx.size]
        self._splits.append((keys, parts))
        return parts

    def pull_async(self, model: str, keys: np.ndarray, with_applied: bool = False) -> Pending:
        """`with_applied`: the Pending gives (values, applied), `applied[i]` the highest push
        of this client the shard of `keys[i]` had applied when it answered (`PullReply`)."""
        parts = self._parts(keys)
        tokens = [self._send(k, Pull(model, keys[idx], self.worker_id, self._last_push[k]))
                  for k, idx in parts]

        def assemble(replies):
            width = replies[0].values.shape[1] if replies else 0
            values = np.empty((keys.size, width), dtype=np.float32)
            rows = as_rows(values) if width else None  # one element a row (`common.rows`)
            applied = np.empty(keys.size, np.int64) if with_applied else None
            for (_k, idx), reply in zip(parts, replies):
                if reply.values.shape != (idx.size, width):
                    raise DeltapsError(f"pull of {idx.size} keys answered with state of shape "
                                       f"{list(reply.values.shape)}")
                if rows is not None:
                    rows[idx] = as_rows(np.ascontiguousarray(reply.values))
                if applied is not None:
                    applied[idx] = reply.applied
            return (values, applied) if with_applied else values
        return Pending(self, tokens, assemble)

    def push_async(self, model: str, keys: np.ndarray, deltas: np.ndarray, events: int = 0,
                   push_no: int | None = None) -> Pending:
        """Push deltas as the next push (or as `push_no`: a journaled push sent again after a
        restart, which shards that applied it answer as a duplicate). `events` (the batch's
        event count) is counted by the first shard the push goes to, so the shards' counts add
        up to the events learned."""
        deltas = np.ascontiguousarray(deltas, dtype=np.float32)
        width = deltas.shape[1] if deltas.ndim == 2 else 0
        rows = as_rows(deltas) if width else None  # one element a row (`common.rows`)
        if push_no is None:
            push_no = self.push_no + 1
        elif push_no < 1:
            raise ValueError(f"push_no must be >= 1, not {push_no}")
        self.push_no = max(self.push_no, push_no)
        parts = self._parts(keys)
        tokens = [self._send(k, Push(model, keys[idx],
                                     deltas[idx] if rows is None else of_rows(rows[idx], width),
                                     self.worker_id, push_no,
                                     min(self._last_push[k], push_no - 1),
                                     events if j == 0 else 0))
                  for j, (k, idx) in enumerate(parts)]
        for k, _idx in parts:
            self._last_push[k] = max(self._last_push[k], push_no)
        return Pending(self, tokens,
                       lambda acks: {k: ack.seq for (k, _idx), ack in zip(parts, acks)})

    def declare(self, model: str, declaration: dict) -> dict:
        """Offer a model's input declaration (empty: only ask for it); returns the one the
        cluster keeps (empty: the model runs undeclared). Shard 0 decides, and what it keeps
        is then offered to every other shard, so trainers racing to declare are ordered by
        shard 0 and all shards end up keeping the same one (`ps.declared`)."""
        kept = self.wait([self._send(0, Declare(model, declaration))])[0].declaration
        if kept and self.n_shards > 1:
            replies = self.wait([self._send(k, Declare(model, kept))
                                 for k in range(1, self.n_shards)])
            for k, reply in enumerate(replies, 1):
                if {**reply.declaration, "source": ""} != {**kept, "source": ""}:
                    raise DeltapsError(f"shard {k} keeps another declaration of model "
                                       f"{model!r} than shard 0: {reply.declaration}")
        return kept

    def pull(self, model: str, keys: np.ndarray) -> np.ndarray:
        """Current optimizer state of `keys`, (len(keys), S) in the order of `keys`."""
        return self.pull_async(model, keys).wait()

    def push(self, model: str, keys: np.ndarray, deltas: np.ndarray) -> dict[int, int]:
        """Send state deltas (len(keys), S); returns {shard: update seq that will publish
        them}."""
        return self.push_async(model, keys, deltas).wait()

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
