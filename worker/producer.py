"""The producer's end of a worker's ingest socket (`deltaps train zmq://HOST:PORT`).

    with Producer("tcp://127.0.0.1:7000", "clicks-1") as p:
        p.send([{"label": 1, "features": {"user": "u7"}}, ...])   # returns the batch id
        p.flush()                                                 # every batch learned

`send` returns once the batch is on its way; at most `window` batches are unacknowledged at a
time, so a producer faster than training blocks in `send` (the worker also answers "busy" when
its queue is full: that batch is sent again after `busy_s`). A batch is acknowledged once
every shard holds its events; one unanswered for `timeout_s` (a worker restarting) is sent
again with the batches after it, and the worker recognises what it already has by the batch
ids, so nothing is learned twice. Give a stable `producer` id to keep that promise across a
producer's own restarts: it resumes numbering after what the worker has taken.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict

from common.errors import Timeout
from common.messages import Ingest, IngestReply, IngestStatus
from common.transport import Channel

POLL_S = 0.02
STATUS_EVERY_S = 0.05


class Producer:
    def __init__(self, address: str, producer: str | None = None, window: int = 4,
                 timeout_s: float = 5.0, busy_s: float = 0.05, connect_s: float = 300.0):
        self.address = address if "://" in address else f"tcp://{address}"
        self.producer = producer or uuid.uuid4().hex[:16]
        self.window, self.timeout_s, self.busy_s = window, timeout_s, busy_s
        self.channel = Channel(self.address)
        self.unacked: OrderedDict[int, bytes] = OrderedDict()  # batch id -> events
        self.acked = 0
        self.resent = 0  # batches sent again (timeouts, busy, gaps)
        self._sent_at = self._asked_at = time.monotonic()
        self._retry_from: int | None = None  # send again from this batch at `_retry_at`
        self._retry_at = 0.0
        status = self._status(connect_s)
        self.acked = status.acked
        self.next_id = status.expect

    def _status(self, connect_s: float) -> IngestReply:
        """Where this producer's numbering stands; waits up to `connect_s` for a worker (one
        may be starting: the question is asked again every `timeout_s`)."""
        deadline = time.monotonic() + connect_s
        while True:
            try:
                reply = self.channel.request(IngestStatus(self.producer),
                                             min(self.timeout_s, connect_s))
                break
            except Timeout:
                if time.monotonic() > deadline:
                    raise Timeout(f"no worker answered on {self.address} within "
                                  f"{connect_s:.0f}s") from None
        if not isinstance(reply, IngestReply):
            raise Timeout(f"ingest socket {self.address} answered {reply!r}")
        return reply

    def send(self, events: list[dict] | bytes) -> int:
        """Queue one batch (event dicts, or JSON lines); returns its batch id."""
        block = events if isinstance(events, bytes) else \
            "\n".join(json.dumps(e) for e in events).encode()
        while len(self.unacked) >= self.window:
            self._pump(POLL_S)
        batch_id = self.next_id
        self.next_id += 1
        self.unacked[batch_id] = block
        self._send(batch_id)
        return batch_id

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every batch sent is learned."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.unacked:
            if deadline is not None and time.monotonic() > deadline:
                raise Timeout(f"{len(self.unacked)} batch(es) not learned within {timeout}s")
            self._pump(POLL_S)

    def _send(self, batch_id: int) -> None:
        self.channel.send(Ingest(self.producer, batch_id, self.unacked[batch_id]))
        self._sent_at = time.monotonic()

    def _resend_from(self, first: int) -> None:
        for batch_id in [b for b in self.unacked if b >= first]:
            self._send(batch_id)
            self.resent += 1

    def _pump(self, wait_s: float) -> None:
        """Take the replies that came; send again what the worker could not take (at most once
        per `busy_s`) or what it left unanswered for `timeout_s`; ask for the status while all
        that was sent is only queued."""
        got = False
        if self.channel.poll(wait_s):
            while self.channel.poll(0):
                reply, _rid = self.channel.read()
                got = True
                self._handle(reply)
        now = time.monotonic()
        if self._retry_from is not None and now >= self._retry_at:
            first, self._retry_from = self._retry_from, None
            self._resend_from(first)
        elif self.unacked and not got and now - self._sent_at > self.timeout_s:
            self._resend_from(next(iter(self.unacked)))  # the worker may have restarted
        elif self.unacked and not got and now - self._asked_at > STATUS_EVERY_S:
            self._asked_at = now
            self.channel.send(IngestStatus(self.producer))

    def _handle(self, reply) -> None:
        if not isinstance(reply, IngestReply):
            return
        self._sent_at = time.monotonic()
        if reply.acked > self.acked:
            self.acked = reply.acked
            for batch_id in [b for b in self.unacked if b <= reply.acked]:
                del self.unacked[batch_id]
        # what the worker could not take, or has not got: a "status" answer (asked for after
        # a quiet spell) names the next batch the worker expects, and one still unacknowledged
        # here was lost with a worker that died holding it (answers to the status questions
        # keep the `timeout_s` resend from ever firing, so they must say it)
        first = {"busy": reply.batch_id, "gap": reply.expect,
                 "status": reply.expect}.get(reply.state)
        if first is not None and first in self.unacked:
            if self._retry_from is None:
                self._retry_at = time.monotonic() + self.busy_s
            self._retry_from = min(first, self._retry_from or first)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
