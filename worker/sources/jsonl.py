"""JSON lines events: one ``{"label": 0|1, "features": {...}, "weight"?: w}`` object per line.

Why JSON lines: events may carry any fields, list values and weights with no schema to
declare, and "features" has the same form as the instances the serving API scores. A line
that is not valid JSON or not a valid event is skipped and reported with its line number; the
rest of its chunk is kept.
"""
from __future__ import annotations

import json
import re
from typing import Iterator

from common.errors import InvalidInstance
from common.features import NUMERIC, Batch, columnarize
from worker.sources.delimited import SCAN_LINES  # blocks as the TSV reader scans them
from worker.sources.json_scan import JsonScanner
from worker.sources.lines import DEFAULT_CHUNK_LINES, LineReader, LineSource, MalformedLines

_INDEX_PREFIX = re.compile(r"^(instance|event) \d+: ")


class JsonLinesSource(LineSource):
    """One event per line: ``{"label": 0|1, "features": {...}, "weight"?: w}``.

    A block of the common shape is read by the compiled scan (`json_scan`); another clean
    block is parsed by pyarrow.json (`jsonl_arrow`); any other is columnarized at once, and
    only when that fails are its events checked one by one to find and skip the bad lines,
    so clean input pays for no per-event validation. A field
    keeps the kind (numeric or categorical) it first had in the stream, because a model's
    feature must mean the same thing throughout; a line that gives it the other kind is
    malformed.
    """

    def __init__(self, path_or_file, chunk_lines: int = DEFAULT_CHUNK_LINES):
        self.chunk_lines = chunk_lines
        self._kinds: dict[str, str] = {}
        self._scanner = JsonScanner()
        super().__init__(LineReader(path_or_file, binary=True))

    def _chunks(self) -> Iterator[Batch]:
        for first_line, lines, block in self._lines.line_blocks(min(self.chunk_lines,
                                                                     SCAN_LINES)):
            batch = self._scanner.scan(block, lines)
            if batch is None:  # pyarrow is loaded only once a block needs it
                from worker.sources.jsonl_arrow import to_batch
                batch = to_batch(block)
            if batch is not None and not self._conflicts(batch):
                self._remember(batch)
                yield batch
                continue
            lines = block.decode("utf-8", "replace").split("\n")
            yield self._parse_chunk(first_line, lines[:-1] if lines[-1] == "" else lines)

    def _parse_chunk(self, first_line: int, lines: list[str],
                     bad: MalformedLines | None = None) -> Batch:
        """The good events of `lines`; bad ones are reported, or only noted in `bad` when the
        caller gives it (a stream source dead-letters them by entry instead)."""
        report = bad is None
        bad = MalformedLines() if bad is None else bad
        events, where = [], []
        loads = json.loads
        for i, line in enumerate(lines):
            if not line or line.isspace():
                continue
            try:
                events.append(loads(line))
                where.append(i)
            except ValueError as exc:
                bad.add(i, f"invalid JSON: {exc}")
        try:
            batch = columnarize(events, with_labels=True)
        except InvalidInstance:
            batch = None
        if batch is None or self._conflicts(batch):
            batch = self._columnarize_each(events, where, bad)
        else:
            self._remember(batch)
        if report:
            bad.report(self.stats, self.name, first_line)
        return batch

    def _conflicts(self, batch: Batch) -> bool:
        return any(self._kinds.get(name, col.kind) != col.kind
                   for name, col in batch.columns.items())

    def _remember(self, batch: Batch) -> None:
        for name, col in batch.columns.items():
            self._kinds.setdefault(name, col.kind)

    def _columnarize_each(self, events: list, where: list[int], bad: MalformedLines) -> Batch:
        """The slow path for a chunk with bad events: validate each, keep the good ones."""
        good = []
        for event, i in zip(events, where):
            try:
                one = columnarize([event], with_labels=True)
            except InvalidInstance as exc:
                bad.add(i, _INDEX_PREFIX.sub("", str(exc)))
                continue
            clash = next((name for name, col in one.columns.items()
                          if self._kinds.get(name, col.kind) != col.kind), None)
            if clash is not None:
                bad.add(i, f"feature {clash!r} is {_kind_word(one.columns[clash].kind)} here "
                           f"but {_kind_word(self._kinds[clash])} in earlier events")
                continue
            self._remember(one)
            good.append(event)
        return columnarize(good, with_labels=True)


def _kind_word(kind: str) -> str:
    return "numeric" if kind == NUMERIC else "categorical"
