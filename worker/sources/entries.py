"""Events that arrive one message each (Redis Streams entries, ZeroMQ ingest), decoded in bulk.

Why one decoder: a message holds one event as JSON (or, in Redis, a map of fields), and the
fast path is the one JSON lines take: the events of a read are joined into one block that the
compiled scan reads (`json_scan`), or pyarrow.json parses and columnarizes at once
(`jsonl_arrow`) when the scan declines it. Only a block with a bad event
falls back to checking its events one by one, so that each bad one is named by its index and
its producer's message can be dead-lettered with the reason; the good ones are kept.
"""
from __future__ import annotations

import json

from common.features import Batch, columnarize
from worker.sources.base import SourceStats
from worker.sources.json_scan import JsonScanner
from worker.sources.jsonl import JsonLinesSource
from worker.sources.jsonl_arrow import to_batch
from worker.sources.lines import MalformedLines

RESERVED = (b"label", b"weight")


class EventDecoder(JsonLinesSource):
    """JSON events in, a `Batch` of the good ones and {index: reason} of the bad ones out.

    A JSON lines parser without a file: it keeps that parser's rule that a field keeps the
    kind (numeric or categorical) it first had in the stream."""

    def __init__(self, name: str):  # no LineReader: blocks come from `decode`
        self.name, self.stats, self._kinds = name, SourceStats(), {}
        self._scanner = JsonScanner()

    def decode(self, events: list[bytes | None]) -> tuple[Batch, dict[int, str]]:
        """`events[i]` is one JSON event (None: the message had none, a reason given here)."""
        bad = MalformedLines()
        for i, e in enumerate(events):
            if not e or e.isspace():
                bad.add(i, "no event: empty or missing 'data'")
        if not bad.reasons:
            block = b"\n".join(events)
            if block.count(b"\n") == len(events) - 1:  # raw newlines are JSON whitespace
                batch = self._scanner.scan(block + b"\n", len(events))
                if batch is None:
                    batch = to_batch(block)
                if batch is not None and not self._conflicts(batch):
                    self._remember(batch)
                    return batch, {}
        lines, where = [], []
        for i, e in enumerate(events):
            if i not in bad.reasons:
                lines.append(e.decode("utf-8", "replace").replace("\n", " ").replace("\r", " "))
                where.append(i)
        inner = MalformedLines()
        batch = self._parse_chunk(0, lines, inner) if lines else columnarize([], with_labels=True)
        for j, reason in inner.reasons.items():
            bad.add(where[j], reason)
        return batch, dict(sorted(bad.reasons.items()))


def field_map_event(fields: dict[bytes, bytes]) -> bytes:
    """A Redis entry given as a field map (`XADD s * label 1 user u7 city Paris`) as a JSON
    event: `label` and `weight` are the event's, every other field a categorical feature (a
    Redis field is a string; send numeric features in a JSON `data` field instead)."""
    features = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                for k, v in fields.items() if k not in RESERVED}
    event: dict = {"features": features}
    for key in RESERVED:
        if key in fields:
            try:
                event[key.decode()] = float(fields[key])
            except ValueError:
                event[key.decode()] = fields[key].decode("utf-8", "replace")
    return json.dumps(event).encode()
