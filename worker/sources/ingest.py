"""`deltaps train zmq://HOST:PORT`: an ingest socket producers send batches of events to
(`worker.producer`), each acknowledged once every shard holds it, exactly once.

- A producer numbers its batches 1, 2, ... The worker takes batch n of a producer only right
  after n - 1 (else it answers "gap" with the id it expects), so a batch resent after a
  timeout or a worker restart is recognised: one already learned is answered "learned", one
  queued "queued", and none is learned twice or skipped.
- Bounded: at most `max_queued` batches wait to be learned; a producer sending faster is
  answered "busy" and sends again later, so nothing is buffered without limit.
- Exactly once across a worker crash, as for the other acknowledged sources
  (`worker.journal`): the highest learned batch id per producer and the journaled push in
  flight live in one sidecar file (`STATE_DIR/ingest.state`, `?state=DIR`, by default
  `.deltaps/ingest-PORT`), replaced atomically; a restart re-sends the journaled push and
  answers producers from the learned ids it kept.
- A producer batch is never split: a trainer batch is whole producer batches (one larger than
  the batch size is learned as one batch). Malformed events are skipped and counted.

The socket is a `common.transport.RequestServer` on its own thread and event loop; reads take
from the bounded queue.
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from common.features import Batch, columnarize, concat_batches
from common.messages import Ingest, IngestReply, IngestStatus
from common.transport import EventLoop, RequestServer
from worker.sources.base import MAX_REPORTED, SourceStats
from worker.sources.entries import EventDecoder
from worker.sources.sidecar import Sidecar, SidecarJournal

log = logging.getLogger("deltaps.sources")
MAX_QUEUED = 8
MAX_BYTES = 256 << 20


class IngestSource(SidecarJournal):
    """The worker's end of the ingest socket (see the module docstring)."""

    live = True

    def __init__(self, url: str, max_queued: int = MAX_QUEUED, poll_s: float = 0.1):
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme != "zmq" or not parts.hostname or not parts.port or set(query) - {
                "state"}:
            raise ValueError(f"bad ingest source {url!r}: use zmq://HOST:PORT[?state=DIR]")
        self.name = url
        self.worker_id = f"zmq/{parts.hostname}:{parts.port}"
        directory = Path(query.get("state") or f".deltaps/ingest-{parts.port}")
        self.sidecar = Sidecar(directory / "ingest.state", f"what {url} has learned")
        saved = self.sidecar.load()
        self._acked: dict[str, int] = dict(saved.get("acked", {}))  # producer -> batch id
        self._journal: dict[int, bytes] = {int(k): v for k, v in saved.get("journal", {}).items()}
        # producer -> highest batch id taken: learned, or in a journaled push that the trainer
        # sends again before it reads (a resend of those must not be queued a second time)
        self._received = dict(self._acked)
        for record in self.journaled():
            for producer, batch_id in record.position or ():
                self._received[producer] = max(self._received.get(producer, 0), batch_id)
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(max_queued)
        self._held: Ingest | None = None  # taken from the queue, not fitting the last read
        self._position: list = []
        self.poll_s = poll_s
        self.stats = SourceStats()
        self._decoder = EventDecoder(url)
        self._stop = threading.Event()
        self.server = RequestServer(f"tcp://{parts.hostname}:{parts.port}",
                                    {"ingest": self.on_ingest, "ingest_status": self.on_status},
                                    MAX_BYTES)
        self.address = self.server.address
        self.loop = EventLoop()
        self.loop.watch(self.server, self.server.handle_ready)
        self._thread = threading.Thread(target=self.loop.run, name="ingest", daemon=True)
        self._thread.start()

    # --- the socket's thread ------------------------------------------------------------------

    def _reply(self, producer: str, batch_id: int, state: str) -> IngestReply:
        return IngestReply(batch_id, state, self._acked.get(producer, 0),
                           self._received.get(producer, 0) + 1)

    def on_ingest(self, msg: Ingest) -> IngestReply:
        with self._lock:
            received = self._received.get(msg.producer, 0)
            if msg.batch_id <= self._acked.get(msg.producer, 0):
                return self._reply(msg.producer, msg.batch_id, "learned")
            if msg.batch_id <= received:
                return self._reply(msg.producer, msg.batch_id, "queued")
            if msg.batch_id != received + 1:
                return self._reply(msg.producer, msg.batch_id, "gap")
            try:
                self._queue.put_nowait(msg)
            except queue.Full:
                return self._reply(msg.producer, msg.batch_id, "busy")
            self._received[msg.producer] = msg.batch_id
            return self._reply(msg.producer, msg.batch_id, "queued")

    def on_status(self, msg: IngestStatus) -> IngestReply:
        with self._lock:
            return self._reply(msg.producer, 0, "status")

    # --- reading ------------------------------------------------------------------------------

    def read(self, max_events: int) -> Batch | None:
        """Whole producer batches, as many as fit in `max_events` (at least one); waits for
        the first, None once stopped."""
        taken: list[Ingest] = []
        size = 0
        while not self._stop.is_set() and not taken:
            nxt = self._take(self.poll_s)
            if nxt is not None:
                taken.append(nxt)
                size = nxt.events.count(b"\n") + 1
        if not taken:
            return None
        while (nxt := self._take(0)) is not None:
            n = nxt.events.count(b"\n") + 1
            if size + n > max_events:
                self._held = nxt
                break
            taken.append(nxt)
            size += n
        self._position = [(m.producer, m.batch_id) for m in taken]
        batch = concat_batches([self._decode(m) for m in taken])
        self.stats.events += batch.n
        return batch

    def _take(self, timeout: float) -> Ingest | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        try:
            return self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _decode(self, msg: Ingest) -> Batch:
        lines = [line for line in msg.events.split(b"\n") if line.strip()]
        if not lines:
            return columnarize([], with_labels=True)
        batch, bad = self._decoder.decode(lines)
        for i, reason in bad.items():
            self.stats.malformed += 1
            if self.stats.malformed <= MAX_REPORTED:
                self.stats.examples.append((f"{msg.producer}/{msg.batch_id}/{i}", reason))
                log.warning("%s: skipped malformed event %d of batch %d of producer %s: %s",
                            self.name, i, msg.batch_id, msg.producer, reason)
        return batch

    def stop(self) -> None:
        """End reading (SIGTERM): what was read is still learned and acknowledged; batches
        still queued are not, and their producers send them again to the next worker."""
        self._stop.set()

    # --- acknowledging ------------------------------------------------------------------------

    def position(self) -> list:
        return self._position

    def _save(self) -> None:
        self.sidecar.save({"acked": self._acked, "journal": self._journal})

    def acknowledge(self, position: Any, push_no: int) -> None:
        with self._lock:
            self._journal.pop(push_no, None)
            for producer, batch_id in position or ():
                if batch_id > self._acked.get(producer, 0):
                    self._acked[producer] = batch_id
                self._received[producer] = max(self._received.get(producer, 0), batch_id)
            self._save()

    def close(self) -> None:
        self._stop.set()  # a read still waiting (a trainer that failed mid-run) ends too
        self.loop.stop()
        self._thread.join(5)
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
