"""TSV and CSV events: a chunk of lines parsed as one byte buffer, against a schema.

A malformed line (wrong field count, label not 0/1, a number that is not a finite number) is
skipped and reported with its line number; the rest of its chunk is kept.
"""
from __future__ import annotations

import csv
from typing import Iterator, Sequence

import numpy as np

from common.features import CATEGORICAL, NUMERIC, Batch, Column
from worker.sources.fields import Fields, byte_window, parse_labels
from worker.sources.lines import DEFAULT_CHUNK_LINES, LineReader, LineSource, MalformedLines
from worker.sources.schema import as_schema, check_schema, schema_from_header


class DelimitedSource(LineSource):
    """TSV/CSV with a schema of (name, kind): kind is label, num, cat or skip.

    An empty field is a missing value. Labels are 0/1 (also -1 for 0, and 0.0/1.0). With
    `header`, the first line names the columns and `schema` (optional) overrides kinds by name.
    Why one byte buffer per chunk: Criteo-sized files have tens of fields a line, so any
    Python work per field would dominate training; field boundaries, integers and ASCII
    strings all come from numpy operations on the chunk's bytes. CSV with quotes goes through
    the csv module instead (a quoted newline is not supported).
    """

    def __init__(self, path_or_file, schema: str | Sequence[tuple[str, str]] | None = None,
                 delimiter: str = "\t", header: bool = False,
                 chunk_lines: int = DEFAULT_CHUNK_LINES):
        if len(delimiter) != 1 or delimiter == "\n" or ord(delimiter) > 127:
            raise ValueError(f"delimiter must be one ASCII character, got {delimiter!r}")
        self.delimiter, self.chunk_lines = delimiter, chunk_lines
        self._lines = LineReader(path_or_file, binary=True)
        schema = as_schema(schema)
        if header:
            columns = self._lines.readline().rstrip("\r\n").split(delimiter)
            schema = schema_from_header(columns, schema or ())
        elif schema is None:
            raise ValueError("a delimited file needs a schema or a header line naming its columns")
        check_schema(schema)
        self.schema = schema
        super().__init__(self._lines)

    def _chunks(self) -> Iterator[Batch]:
        for first_line, lines in self._lines.chunks(self.chunk_lines):
            yield self._parse_chunk(first_line, b"".join(lines))

    def _parse_chunk(self, first_line: int, block: bytes) -> Batch:
        bad = MalformedLines()
        if self.delimiter == "," and b'"' in block:
            good, fields = self._split_quoted(block, bad)
        else:
            good, fields = self._split(block, bad)
        batch = self._build(good, fields, bad)
        bad.report(self.stats, self.name, first_line)
        return batch

    def _split(self, block: bytes, bad: MalformedLines) -> tuple[np.ndarray, list[Fields]]:
        """Indices of the lines with the right field count, and their fields column by column."""
        ncols = len(self.schema)
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        if not block.endswith(b"\n"):
            block += b"\n"
        buf = np.frombuffer(block, np.uint8)
        is_newline = buf == 10
        bounds = np.flatnonzero(is_newline | (buf == ord(self.delimiter)))
        ends_line = is_newline[bounds]
        line_end = bounds[ends_line]
        line_of = np.cumsum(ends_line) - ends_line  # line index of each boundary
        nfields = np.bincount(line_of, minlength=line_end.size)
        line_start = np.concatenate(([0], line_end[:-1] + 1))
        blank = line_end == line_start
        good = (nfields == ncols) & ~blank
        for i in np.flatnonzero(~good & ~blank):
            if block[line_start[i]:line_end[i]].strip():  # whitespace-only lines are blank
                bad.add(i, f"expected {ncols} fields, got {nfields[i]}")
        ends = bounds[good[line_of]].reshape(-1, ncols)
        starts = np.empty_like(ends)
        starts[:, 0] = line_start[good]
        starts[:, 1:] = ends[:, :-1] + 1
        window = byte_window(buf, int((ends - starts).max(initial=0)))
        fields = [Fields.from_bytes(window, starts[:, j], ends[:, j])
                  if kind != "skip" else None for j, (_, kind) in enumerate(self.schema)]
        return np.flatnonzero(good), fields

    def _split_quoted(self, block: bytes, bad: MalformedLines) -> tuple[np.ndarray, list[Fields]]:
        """CSV with quoted fields, through the csv module (a quoted newline is not supported)."""
        ncols = len(self.schema)
        text = block.decode("utf-8", "replace")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        rows = list(csv.reader(lines))
        for i, row in enumerate(rows):
            if len(row) not in (0, ncols) and lines[i].strip():
                bad.add(i, f"expected {ncols} fields, got {len(row)}")
        good = np.array([i for i, row in enumerate(rows) if len(row) == ncols], np.int64)
        fields = [Fields.from_strings([rows[i][j] for i in good]) if kind != "skip" else None
                  for j, (_, kind) in enumerate(self.schema)]
        return good, fields

    def _build(self, good: np.ndarray, fields: list[Fields | None], bad: MalformedLines) -> Batch:
        """Parse each column of the well-formed lines; drop lines with a bad label or number."""
        m = good.size
        invalid = np.zeros(m, bool)
        parsed: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        labels = np.zeros(m, np.float32)
        for (name, kind), col in zip(self.schema, fields):
            if kind == "label":
                labels, not_label = parse_labels(col)
                for i in np.flatnonzero(not_label):
                    bad.add(good[i], f"label must be 0 or 1, got {col.text(i)!r}")
                invalid |= not_label
            elif kind in ("num", "cat"):
                present = col.lengths > 0
                if kind == "cat":
                    parsed[name] = (CATEGORICAL, present, col.take(present).strings())
                    continue
                values, not_number = col.take(present).numbers()
                where = np.flatnonzero(present)[not_number]
                for i in where:
                    bad.add(good[i], f"field {name!r} is not a finite number: {col.text(i)!r}")
                invalid[where] = True
                parsed[name] = (NUMERIC, present, values)
        return _assemble(m, invalid, parsed, labels)


def _assemble(m: int, invalid: np.ndarray, parsed: dict, labels: np.ndarray) -> Batch:
    """A Batch from per-line columns: drop invalid lines; `values` hold present fields only."""
    keep = ~invalid
    new_row = np.cumsum(keep) - 1
    columns = {}
    for name, (kind, present, values) in parsed.items():
        rows = np.flatnonzero(present)
        kept = keep[rows]
        columns[name] = Column(kind, new_row[rows[kept]], values[kept])
    return Batch(int(keep.sum()), columns, labels[keep])
