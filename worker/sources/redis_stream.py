"""Redis Streams in, exactly once: `redis://HOST:PORT/STREAM?group=GROUP[&consumer=NAME]`.

Several workers share a stream through a consumer group (XREADGROUP): each entry goes to one of
them. An entry is one event, JSON in its `data` field or a field map (`entries`), decoded in
bulk. Why it is exact:

- An entry is acknowledged (XACK) only once every shard acknowledged the push of the batch that
  holds it (`acknowledge`, called by the trainer in push order), so a killed worker's entries
  stay pending in the group: nothing is lost.
- The worker's identity is the consumer's (stream, group, consumer name): a restart under the
  same name resumes its push numbering where the shards say it ended, reads its own pending
  entries again first (XREADGROUP from id 0), and re-sends the push journaled in
  `STREAM:journal:GROUP:CONSUMER` (a hash, push number -> `worker.journal.JournalRecord`)
  before anything else. A batch some shards applied and others not is thus completed with the
  very same deltas, not learned again: nothing is learned twice. XACK and dropping the
  journal record happen in one MULTI/EXEC, so no crash falls between them.
- Entries another consumer left pending (a worker gone for good) are claimed after
  `claim_idle_ms` of its silence (XPENDING + XCLAIM of that consumer's entries), but only when
  it left no journaled push: that push is resolved by restarting a worker under its name.
- A malformed entry is copied to `STREAM:dead` with the reason and acknowledged, in one
  MULTI/EXEC, and counted (`stats.malformed`).

A stream never ends: reading blocks up to `block_ms` at a time and stops on `stop()` (SIGTERM)
or, with `until_empty`, once the group has nothing more to deliver.
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

from common.features import Batch
from worker.journal import JournalRecord
from worker.sources.base import MAX_REPORTED, SourceStats
from worker.sources.entries import EventDecoder, field_map_event

log = logging.getLogger("deltaps.sources")
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000


def parse_redis_url(url: str) -> dict:
    """HOST, PORT, STREAM, GROUP and CONSUMER of a redis:// source, with clear errors."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"group", "consumer", "start"}
    stream = parts.path.lstrip("/")
    if parts.scheme != "redis" or not stream or "/" in stream:
        raise ValueError(f"bad Redis source {url!r}: use redis://HOST:PORT/STREAM?group=GROUP"
                         "[&consumer=NAME]")
    if unknown:
        raise ValueError(f"Redis source {url!r}: unknown option(s) {sorted(unknown)}; "
                         "use group, consumer, start")
    if not query.get("group"):
        raise ValueError(f"Redis source {url!r} names no consumer group (?group=GROUP)")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"Redis source {url!r}: bad port") from None
    return {"host": parts.hostname or "127.0.0.1", "port": port, "stream": stream,
            "group": query["group"], "consumer": query.get("consumer") or socket.gethostname(),
            "start": query.get("start", "0")}


class RedisStreamSource:
    """One consumer of a group on a Redis stream (see the module docstring)."""

    live = True

    def __init__(self, url: str, until_empty: bool = False, block_ms: int = BLOCK_MS,
                 claim_idle_ms: int = CLAIM_IDLE_MS):
        import redis  # only workers reading Redis need the client
        self._errors = redis.RedisError
        where = parse_redis_url(url)
        self.stream, self.group, self.consumer = where["stream"], where["group"], where["consumer"]
        self.name = url
        self.worker_id = f"redis/{self.stream}/{self.group}/{self.consumer}"
        self.dead_stream = f"{self.stream}:dead"
        self.journal_key = f"{self.stream}:journal:{self.group}:{self.consumer}"
        self.until_empty, self.block_ms, self.claim_idle_ms = until_empty, block_ms, claim_idle_ms
        self.stats = SourceStats()
        self._decoder = EventDecoder(url)
        self._stop = threading.Event()
        self._history: bytes | None = b"0"  # reading own pending entries from this id
        self._position: list[bytes] = []
        self.r = redis.Redis(where["host"], where["port"], socket_timeout=block_ms / 1000 + 30,
                             socket_connect_timeout=10)
        try:
            self.r.xgroup_create(self.stream, self.group, id=where["start"], mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise ValueError(f"Redis source {url}: {exc}") from None
        except redis.RedisError as exc:
            raise OSError(f"Redis at {where['host']}:{where['port']}: {exc}") from None
        self.claimed = self._claim_orphans()

    # --- reading ------------------------------------------------------------------------------

    def read(self, max_events: int) -> Batch | None:
        """The next entries delivered to this consumer, at most `max_events` (its own pending
        ones first); None once stopped, or with `until_empty` when nothing is left."""
        while not self._stop.is_set():
            if self._history is not None:
                got = self.r.xreadgroup(self.group, self.consumer, {self.stream: self._history},
                                        count=max_events)
                entries = got[0][1] if got else []
                if not entries:
                    self._history = None
                    continue
                self._history = entries[-1][0]
            else:
                got = self.r.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                        count=max_events, block=self.block_ms)
                entries = got[0][1] if got else []
                if not entries:
                    if self.until_empty:
                        return None
                    continue
            batch = self._decode(entries)
            self.stats.events += batch.n
            return batch
        return None

    def _decode(self, entries: list) -> Batch:
        ids = [e[0] for e in entries]
        events = [None if not f else f.get(b"data") if b"data" in f else field_map_event(f)
                  for _id, f in entries]
        batch, bad = self._decoder.decode(events)
        if bad:
            self._dead_letter([(entries[i], reason) for i, reason in bad.items()])
            ids = [entry_id for i, entry_id in enumerate(ids) if i not in bad]
        self._position = ids
        return batch

    def _dead_letter(self, bad: list[tuple[tuple, str]]) -> None:
        """Copy malformed entries to STREAM:dead with the reason and acknowledge them, at once."""
        pipe = self.r.pipeline(transaction=True)
        for (entry_id, fields), reason in bad:
            data = (fields or {}).get(b"data")
            if data is None:
                data = field_map_event(fields) if fields else b""
            pipe.xadd(self.dead_stream, {b"id": entry_id, b"reason": reason, b"data": data})
        pipe.xack(self.stream, self.group, *[e[0] for e, _reason in bad])
        pipe.execute()
        for (entry_id, _fields), reason in bad:
            self.stats.malformed += 1
            if self.stats.malformed <= MAX_REPORTED:
                self.stats.examples.append((entry_id.decode(), reason))
                log.warning("%s: entry %s dead-lettered to %s: %s", self.name,
                            entry_id.decode(), self.dead_stream, reason)

    def stop(self) -> None:
        """Make reading end (SIGTERM): the batches already read are still learned and
        acknowledged; the blocked read returns within `block_ms`."""
        self._stop.set()

    # --- acknowledging ------------------------------------------------------------------------

    def position(self) -> list[bytes]:
        return self._position

    def journal(self, record: JournalRecord) -> None:
        self.r.hset(self.journal_key, str(record.push_no), record.encode())

    def journaled(self) -> list[JournalRecord]:
        saved = self.r.hgetall(self.journal_key)
        return [JournalRecord.decode(saved[k], f"redis key {self.journal_key}")
                for k in sorted(saved, key=int)]

    def acknowledge(self, position: Any, push_no: int) -> None:
        pipe = self.r.pipeline(transaction=True)
        if position:
            pipe.xack(self.stream, self.group, *position)
        pipe.hdel(self.journal_key, str(push_no))
        pipe.execute()

    # --- the group ----------------------------------------------------------------------------

    def _claim_orphans(self) -> int:
        """Take over the pending entries of consumers silent for `claim_idle_ms` that left no
        journaled push; returns how many entries were claimed."""
        claimed = 0
        for info in self.r.xinfo_consumers(self.stream, self.group):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name == self.consumer or not info["pending"] or info["idle"] < self.claim_idle_ms:
                continue
            journal = f"{self.stream}:journal:{self.group}:{name}"
            if self.r.hlen(journal):
                log.warning("%s: consumer %s left a journaled push; restart a worker as "
                            "consumer=%s to complete it before its %d entries are claimed",
                            self.name, name, name, info["pending"])
                continue
            while True:
                rows = self.r.xpending_range(self.stream, self.group, "-", "+", 1000,
                                             consumername=name, idle=self.claim_idle_ms)
                if not rows:
                    break
                got = self.r.xclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                    [row["message_id"] for row in rows], justid=True)
                claimed += len(got)
                if not got:
                    break
            self.r.xgroup_delconsumer(self.stream, self.group, name)
        if claimed:
            log.warning("%s: claimed %d pending entries of silent consumers", self.name, claimed)
        return claimed

    def lag(self) -> dict:
        """The group's pending entries (delivered, not yet acknowledged) and lag (entries not
        yet delivered), as XINFO GROUPS tells them; empty if Redis cannot say."""
        try:
            for info in self.r.xinfo_groups(self.stream):
                name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
                if name == self.group:
                    return {"pending": int(info.get("pending") or 0),
                            "lag": int(info.get("lag") or 0)}
        except self._errors:
            pass
        return {}

    def close(self) -> None:
        self._stop.set()  # a read still waiting (a trainer that failed mid-run) ends too
        self.r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
