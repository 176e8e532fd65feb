"""Event sources: files, stdin, MovieLens and synthetic streams, read as columnar `Batch`es.

Every source has ``read(max_events) -> Batch | None``: the trainer may ask for a different
number of events on every call (None means the stream is over), and ``batches(batch_size)``
is the fixed-size convenience. Text sources read a chunk of lines at a time, build whole
columns with numpy, and cut chunks into batches with `ChunkCutter`.

A malformed line (wrong field count, label not 0/1, bad number, invalid JSON, a value of the
wrong type) never stops training: it is skipped, counted in ``source.stats``, and the first
`MAX_REPORTED` are logged on ``deltaps.sources`` with their 1-based line number.
"""
from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import logging
import os
import select
import stat
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

from common.errors import InvalidInstance
from common.features import CATEGORICAL, NUMERIC, Batch, Column, columnarize, concat_batches

log = logging.getLogger("deltaps.sources")

MAX_REPORTED = 20
DEFAULT_CHUNK_LINES = 65536
SCHEMA_KINDS = ("label", "num", "cat", "skip")
CRITEO_SCHEMA: list[tuple[str, str]] = (
    [("label", "label")] + [(f"i{k}", "num") for k in range(1, 14)]
    + [(f"c{k}", "cat") for k in range(1, 27)])

_ONE_LABELS = ("1", "1.0", "+1")
_ZERO_LABELS = ("0", "0.0", "-1", "-1.0")


@dataclass
class SourceStats:
    """What a source has read so far; `examples` keeps the first malformed lines for reports."""

    events: int = 0
    malformed: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def malformed_line(self, source: str, line: int, reason: str) -> None:
        """Count a skipped line; log and keep only the first MAX_REPORTED of them."""
        self.malformed += 1
        if len(self.examples) < MAX_REPORTED:
            self.examples.append((line, reason))
            log.warning("%s:%d: skipped malformed line: %s", source, line, reason)
            if len(self.examples) == MAX_REPORTED:
                log.warning("%s: further malformed lines are counted but not logged", source)

    def as_dict(self) -> dict:
        return {"events": self.events, "malformed": self.malformed,
                "examples": [list(e) for e in self.examples]}


class ChunkCutter:
    """Cuts a stream of chunks into batches of whatever size each `read` asks for.

    Chunks are ``(Batch, aux)`` pairs where `aux` is None or a per-event array (e.g. true
    probabilities) cut the same way. A batch spanning two chunks is joined with
    `concat_batches`, so every batch but the last has exactly the size asked for.
    """

    def __init__(self, chunks: Iterator[tuple[Batch, np.ndarray | None]], live=lambda: False):
        self._chunks = chunks
        self._live = live  # a live stream: once a read has events, it never waits for more
        self._chunk: Batch | None = None
        self._aux: np.ndarray | None = None
        self._offset = 0

    def _refill(self) -> bool:
        while self._chunk is None or self._offset >= self._chunk.n:
            nxt = next(self._chunks, None)
            if nxt is None:
                self._chunk = None
                return False
            self._chunk, self._aux = nxt
            self._offset = 0
        return True

    def read(self, max_events: int) -> tuple[Batch, np.ndarray | None] | None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        parts: list[Batch] = []
        aux_parts: list[np.ndarray] = []
        need = max_events
        while need > 0:
            drained = self._chunk is None or self._offset >= self._chunk.n
            if drained and parts and self._live():
                break  # a live stream hands over what has arrived instead of waiting
            if not self._refill():
                break
            take = min(need, self._chunk.n - self._offset)
            stop = self._offset + take
            parts.append(self._chunk.slice(self._offset, stop))
            if self._aux is not None:
                aux_parts.append(self._aux[self._offset:stop])
            self._offset, need = stop, need - take
        if not parts:
            return None
        batch = parts[0] if len(parts) == 1 else concat_batches(parts)
        aux = None if not aux_parts else (aux_parts[0] if len(aux_parts) == 1
                                          else np.concatenate(aux_parts))
        return batch, aux


class Source:
    """Base of the readers: subclasses yield chunks from `_chunks`; reading is shared."""

    def __init__(self, name: str):
        self.name = name
        self.stats = SourceStats()
        self.live = False  # set by sources reading a pipe, terminal or socket
        self._cutter = ChunkCutter(self._chunks_with_aux(), lambda: self.live)

    def _chunks(self) -> Iterator[Batch]:
        raise NotImplementedError

    def _chunks_with_aux(self) -> Iterator[tuple[Batch, np.ndarray | None]]:
        """Chunks paired with per-event extras to cut alongside (none by default)."""
        return ((chunk, None) for chunk in self._chunks())

    def _on_batch(self, batch: Batch, aux: np.ndarray | None) -> None:
        """Hook called with every batch read and its extras."""

    def read(self, max_events: int) -> Batch | None:
        """The next at most `max_events` events (fewer only at the end); None when exhausted."""
        got = self._cutter.read(max_events)
        if got is None:
            return None
        batch, aux = got
        self.stats.events += batch.n
        self._on_batch(batch, aux)
        return batch

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Iterate over batches of `batch_size` events (the last may be shorter)."""
        while (batch := self.read(batch_size)) is not None:
            yield batch

    def close(self) -> None:
        """Release the input; a no-op for sources that hold nothing open."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Lines:
    """Lines of an input (path, "-" for stdin, or file object), in numbered chunks.

    `binary` inputs yield bytes lines (text streams are encoded as UTF-8 per chunk); text
    inputs yield str lines (bytes streams are decoded, invalid UTF-8 replaced).
    """

    def __init__(self, path_or_file: str | Path | IO, binary: bool):
        self.binary, self._owned, self._encode = binary, False, False
        if isinstance(path_or_file, (str, Path)) and str(path_or_file) != "-":
            path = Path(path_or_file)
            opener = gzip.open if path.suffix == ".gz" else open
            self.file = (opener(path, "rb") if binary
                         else opener(path, "rt", encoding="utf-8", errors="replace"))
            self.name, self._owned = str(path), True
        else:
            stdin = isinstance(path_or_file, (str, Path))
            f = sys.stdin if stdin else path_or_file
            if binary and stdin:
                f = getattr(f, "buffer", f)
            is_bytes = isinstance(f.read(0), bytes)
            if not binary and is_bytes:
                f = io.TextIOWrapper(f, encoding="utf-8", errors="replace")
            self.file, self._encode = f, binary and not is_bytes
            name = "<stdin>" if stdin else getattr(path_or_file, "name", None)
            self.name = name if isinstance(name, str) else "<stream>"
        self.next_line = 1  # 1-based number of the next line to be read

    def readline(self) -> str:
        """One line as text (for a header)."""
        line = self.file.readline()
        if line:
            self.next_line += 1
        return line.decode("utf-8", "replace") if isinstance(line, bytes) else line

    @property
    def live(self) -> bool:
        """A pipe, terminal or socket: lines arrive over time, not all at once."""
        try:
            return not stat.S_ISREG(os.fstat(self.file.fileno()).st_mode)
        except (OSError, AttributeError, io.UnsupportedOperation):
            return False

    def chunks(self, size: int) -> Iterator[tuple[int, list]]:
        """Yield (number of the first line, lines) for up to `size` lines at a time.

        On a live input a chunk holds the complete lines that have arrived (at least one), so
        events are trained on as they come rather than once `size` lines have piled up.
        """
        if self.live:
            yield from self._live_chunks(size)
            return
        while True:
            lines = list(itertools.islice(self.file, size))
            if not lines:
                return
            if self._encode:
                lines = [line.encode("utf-8") for line in lines]
            first, self.next_line = self.next_line, self.next_line + len(lines)
            yield first, lines

    def _live_chunks(self, size: int) -> Iterator[tuple[int, list]]:
        fd = self.file.fileno()
        pending = b""
        while True:
            select.select([fd], [], [])  # block until something arrives
            data = os.read(fd, 1 << 20)
            while data and select.select([fd], [], [], 0)[0] and len(data) < (8 << 20):
                more = os.read(fd, 1 << 20)  # take whatever else is already there
                if not more:
                    break
                data += more
            if not data:  # end of input
                if pending:
                    yield from self._emit([pending], size)
                return
            lines = (pending + data).splitlines(keepends=True)
            pending = lines.pop() if not lines[-1].endswith(b"\n") else b""
            if lines:
                yield from self._emit(lines, size)

    def _emit(self, lines: list[bytes], size: int) -> Iterator[tuple[int, list]]:
        for start in range(0, len(lines), size):
            part = lines[start:start + size]
            if not self.binary:
                part = [line.decode("utf-8", "replace") for line in part]
            first, self.next_line = self.next_line, self.next_line + len(part)
            yield first, part

    def close(self) -> None:
        if self._owned:
            self.file.close()


def parse_schema(text: str) -> list[tuple[str, str]]:
    """Parse ``"label,i1:num,c1:cat,x:skip"`` into [(name, kind)].

    A name without a kind is the label if it is called "label", else categorical.
    """
    schema = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise ValueError(f"empty column in schema {text!r}")
        name, _, kind = item.partition(":")
        name, kind = name.strip(), kind.strip() or ("label" if name.strip() == "label" else "cat")
        if kind not in SCHEMA_KINDS:
            raise ValueError(f"column {name!r}: kind must be one of {SCHEMA_KINDS}, got {kind!r}")
        schema.append((name, kind))
    names = [n for n, _ in schema]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"schema names columns more than once: {dupes}")
    return schema


def _as_schema(schema: str | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
    if schema is None or isinstance(schema, str):
        return None if schema is None else parse_schema(schema)
    return [(str(n), str(k)) for n, k in schema]


def schema_from_header(columns: Sequence[str], overrides: Sequence[tuple[str, str]] = ()
                       ) -> list[tuple[str, str]]:
    """Schema for a file whose header names its columns.

    `overrides` give kinds by name; otherwise the first column called "label" is the label
    and every other column is categorical.
    """
    given = dict(overrides)
    unknown = sorted(set(given) - set(columns))
    if unknown:
        raise ValueError(f"schema names columns {unknown} that the header does not have "
                         f"(header: {list(columns)})")
    has_label = "label" in given.values()
    schema, label_seen = [], has_label
    for name in columns:
        kind = given.get(name)
        if kind is None:
            kind = "label" if name == "label" and not label_seen else "cat"
            label_seen = label_seen or kind == "label"
        schema.append((name, kind))
    return schema


def _check_schema(schema: Sequence[tuple[str, str]]) -> None:
    bad = [(n, k) for n, k in schema if k not in SCHEMA_KINDS]
    if bad:
        raise ValueError(f"schema kinds must be one of {SCHEMA_KINDS}: {bad}")
    labels = [n for n, k in schema if k == "label"]
    if len(labels) != 1:
        raise ValueError(f"schema needs exactly one label column, has {len(labels)}: {labels}")


class _Malformed:
    """Reasons for bad lines of one chunk, keyed by index in the chunk; first reason wins."""

    def __init__(self):
        self.reasons: dict[int, str] = {}

    def add(self, index, reason: str) -> None:
        self.reasons.setdefault(int(index), reason)

    def report(self, stats: SourceStats, source: str, first_line: int) -> None:
        for i in sorted(self.reasons):
            stats.malformed_line(source, first_line + i, self.reasons[i])


class _Fields:
    """One column of a chunk: a matrix of character codes (UTF-8 bytes or code points), one row
    per line, zero-padded, and each field's length. Empty (length 0) means missing.

    Numbers and strings are decoded from the matrix with whole-array operations.
    """

    def __init__(self, lengths: np.ndarray, codes: np.ndarray | None = None,
                 window: np.ndarray | None = None, starts: np.ndarray | None = None):
        self.lengths = lengths
        self._codes, self._window, self._starts = codes, window, starts

    @classmethod
    def from_bytes(cls, window: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> "_Fields":
        """Fields [starts, ends) of a chunk; `window[i]` is the chunk's bytes from i on."""
        return cls(ends - starts, window=window, starts=starts)

    @classmethod
    def from_strings(cls, texts: list[str]) -> "_Fields":
        arr = np.array(texts, dtype=str)
        if arr.dtype.itemsize == 0:
            arr = arr.astype("U1")
        codes = arr.view(np.uint32).reshape(arr.size, arr.dtype.itemsize // 4)
        return cls(np.char.str_len(arr).astype(np.int64), codes=codes)

    @property
    def codes(self) -> np.ndarray:
        """The (fields, width) code matrix, zero past each field's end; gathered on first use."""
        if self._codes is None:
            width = max(int(self.lengths.max(initial=0)), 1)
            rows = self._window[:, :width][self._starts]
            self._codes = rows * (np.arange(width) < self.lengths[:, None])
        return self._codes

    def take(self, mask: np.ndarray) -> "_Fields":
        if self._codes is None:
            return _Fields(self.lengths[mask], window=self._window, starts=self._starts[mask])
        return _Fields(self.lengths[mask], codes=self._codes[mask])

    def text(self, i: int) -> str:
        """Field i as text (for messages)."""
        row = self.codes[i, :self.lengths[i]]
        if row.dtype == np.uint8:
            return row.tobytes().decode("utf-8", "replace")
        return "".join(map(chr, row.tolist()))

    def strings(self) -> np.ndarray:
        """The fields as a numpy unicode array."""
        m, width = self.codes.shape
        if self.codes.dtype == np.uint32:
            return np.ascontiguousarray(self.codes).view(f"<U{width}").reshape(m)
        if self.codes.max(initial=0) < 128:  # ASCII: a byte is its code point
            return self.codes.astype(np.uint32).view(f"<U{width}").reshape(m)
        raw = np.ascontiguousarray(self.codes).view(f"S{width}").reshape(m)
        return np.char.decode(raw, "utf-8", "replace")

    def numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """Floats of the fields and a mask of fields that are not finite numbers.

        Plain integers (optional sign, up to 15 digits; all of Criteo) are computed from the
        digit codes directly (Horner's rule, one pass per character position); anything else
        goes through numpy's string-to-float parsing.
        """
        codes, lengths = self.codes, self.lengths
        m, width = codes.shape
        if m == 0:
            return np.zeros(0), np.zeros(0, bool)
        digit = codes - codes.dtype.type(48)  # wraps around for codes below '0'
        is_digit = digit <= 9  # zero padding is not a digit
        signed = (codes[:, 0] == 45) | (codes[:, 0] == 43)
        n_digits = is_digit.sum(axis=1)
        if width <= 15 and np.array_equal(n_digits + signed, lengths) and (n_digits > 0).all():
            values = np.zeros(m)
            for k in range(width):
                values = np.where(is_digit[:, k], values * 10 + digit[:, k], values)
            values[codes[:, 0] == 45] *= -1
            return values, np.zeros(m, bool)
        return _parse_floats(self.strings())


def _byte_window(buf: np.ndarray, width: int) -> np.ndarray:
    """A read-only (len, width) view whose row i is buf[i:i+width] (zero-padded past the end),
    so gathering a field is one row copy instead of per-byte indexing."""
    width = max(width, 1)
    padded = np.concatenate([buf, np.zeros(width, np.uint8)])
    return np.lib.stride_tricks.as_strided(padded, shape=(buf.size, width), strides=(1, 1),
                                           writeable=False)


def _parse_floats(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats of a string array and a mask of entries that are not finite numbers."""
    try:
        values = texts.astype(np.float64)
    except ValueError:  # some entry is not a number: find which, on this column only
        values = np.empty(texts.shape[0], np.float64)
        for i, s in enumerate(texts.tolist()):
            try:
                values[i] = float(s)
            except ValueError:
                values[i] = np.nan
    return values, ~np.isfinite(values)


def _parse_labels(fields: _Fields) -> tuple[np.ndarray, np.ndarray]:
    """0/1 float32 labels of a column, and a mask of entries that are not labels."""
    arr = fields.strings()
    ones = np.isin(arr, _ONE_LABELS)
    zeros = np.isin(arr, _ZERO_LABELS)
    return ones.astype(np.float32), ~(ones | zeros)


class _LineSource(Source):
    """A source reading lines from a path, stdin ("-") or a file object."""

    def __init__(self, lines: "_Lines"):
        self._lines = lines
        super().__init__(lines.name)
        self.live = lines.live

    def close(self) -> None:
        self._lines.close()


class DelimitedSource(_LineSource):
    """TSV/CSV with a schema of (name, kind): kind is label, num, cat or skip.

    An empty field is a missing value. Labels are 0/1 (also -1 for 0, and 0.0/1.0). With
    `header`, the first line names the columns and `schema` (optional) overrides kinds by name.
    A chunk is parsed as one byte buffer: field boundaries, integers and ASCII strings come
    from numpy operations on it, with no Python work per field. CSV with quotes goes through
    the csv module instead.
    """

    def __init__(self, path_or_file, schema: str | Sequence[tuple[str, str]] | None = None,
                 delimiter: str = "\t", header: bool = False,
                 chunk_lines: int = DEFAULT_CHUNK_LINES):
        if len(delimiter) != 1 or delimiter == "\n" or ord(delimiter) > 127:
            raise ValueError(f"delimiter must be one ASCII character, got {delimiter!r}")
        self.delimiter, self.chunk_lines = delimiter, chunk_lines
        self._lines = _Lines(path_or_file, binary=True)
        schema = _as_schema(schema)
        if header:
            columns = self._lines.readline().rstrip("\r\n").split(delimiter)
            schema = schema_from_header(columns, schema or ())
        elif schema is None:
            raise ValueError("a delimited file needs a schema or a header line naming its columns")
        _check_schema(schema)
        self.schema = schema
        super().__init__(self._lines)

    def _chunks(self) -> Iterator[Batch]:
        for first_line, lines in self._lines.chunks(self.chunk_lines):
            yield self._parse_chunk(first_line, b"".join(lines))

    def _parse_chunk(self, first_line: int, block: bytes) -> Batch:
        bad = _Malformed()
        if self.delimiter == "," and b'"' in block:
            good, fields = self._split_quoted(block, bad)
        else:
            good, fields = self._split(block, bad)
        batch = self._build(good, fields, bad)
        bad.report(self.stats, self.name, first_line)
        return batch

    def _split(self, block: bytes, bad: _Malformed) -> tuple[np.ndarray, list[_Fields]]:
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
        window = _byte_window(buf, int((ends - starts).max(initial=0)))
        fields = [_Fields.from_bytes(window, starts[:, j], ends[:, j])
                  if kind != "skip" else None for j, (_, kind) in enumerate(self.schema)]
        return np.flatnonzero(good), fields

    def _split_quoted(self, block: bytes, bad: _Malformed) -> tuple[np.ndarray, list[_Fields]]:
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
        fields = [_Fields.from_strings([rows[i][j] for i in good]) if kind != "skip" else None
                  for j, (_, kind) in enumerate(self.schema)]
        return good, fields

    def _build(self, good: np.ndarray, fields: list[_Fields | None], bad: _Malformed) -> Batch:
        """Parse each column of the well-formed lines; drop lines with a bad label or number."""
        m = good.size
        invalid = np.zeros(m, bool)
        parsed: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        labels = np.zeros(m, np.float32)
        for (name, kind), col in zip(self.schema, fields):
            if kind == "label":
                labels, not_label = _parse_labels(col)
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


_INDEX_PREFIX = re.compile(r"^(instance|event) \d+: ")


class JsonLinesSource(_LineSource):
    """One event per line: ``{"label": 0|1, "features": {...}, "weight"?: w}``.

    A chunk is columnarized at once; only when that fails are its events checked one by one
    to find and skip the bad lines. A field keeps the kind (numeric or categorical) it first
    had in the stream; a line that gives it the other kind is malformed.
    """

    def __init__(self, path_or_file, chunk_lines: int = DEFAULT_CHUNK_LINES):
        self.chunk_lines = chunk_lines
        self._kinds: dict[str, str] = {}
        super().__init__(_Lines(path_or_file, binary=False))

    def _chunks(self) -> Iterator[Batch]:
        for first_line, lines in self._lines.chunks(self.chunk_lines):
            yield self._parse_chunk(first_line, lines)

    def _parse_chunk(self, first_line: int, lines: list[str]) -> Batch:
        bad = _Malformed()
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
        bad.report(self.stats, self.name, first_line)
        return batch

    def _conflicts(self, batch: Batch) -> bool:
        return any(self._kinds.get(name, col.kind) != col.kind
                   for name, col in batch.columns.items())

    def _remember(self, batch: Batch) -> None:
        for name, col in batch.columns.items():
            self._kinds.setdefault(name, col.kind)

    def _columnarize_each(self, events: list, where: list[int], bad: _Malformed) -> Batch:
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


# ---------------------------------------------------------------------------------------------
# MovieLens 100k

MOVIELENS_SPEC_TOML = """\
# A model for MovieLens 100k (MovieLensSource): will a user rate a movie 4 or 5 stars?
[transforms.age]
kind = "buckets"
boundaries = [18, 25, 35, 45, 50, 56]

# User and item ids arrive as numbers in JSON ({"user": 196}): treat them as ids, not amounts.
[transforms.user]
kind = "categorical"

[transforms.item]
kind = "categorical"

[transforms.year]
kind = "buckets"
boundaries = [1940, 1960, 1970, 1980, 1990, 1994, 1996, 1997]

[models.movielens]
bits = 22
fields = ["user", "item", "age", "gender", "occupation", "zip3", "genres", "year"]
transforms = ["user", "item", "age", "year"]
# Per-user taste for genres and eras; per-movie appeal by gender and age group.
# (Chosen by progressive logloss in 32-event batches: 0.616 without crosses, 0.585 with these.)
crosses = [["user", "genres"], ["user", "year"], ["item", "gender"], ["item", "age"]]

[models.movielens.optimizer]
name = "ftrl"
learning_rate = 0.2
beta = 1.0
l1 = 0.0
l2 = 1.0
"""


class MovieLensSource(Source):
    """MovieLens 100k ratings joined with user and movie attributes, in timestamp order.

    label = rating >= 4. Columns: user, item (int64 ids), age (numeric), gender, occupation,
    zip3 (first 3 characters of the zip code), genres (one entry per genre flag set), year
    (release year, numeric; missing if the date does not parse). The files are small, so they
    are read and joined whole, with numpy indexing by id.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        for required in ("u.data", "u.user", "u.item", "u.genre"):
            if not (self.directory / required).is_file():
                raise ValueError(f"{self.directory} is not a MovieLens 100k directory: "
                                 f"no {required}")
        super().__init__(str(self.directory / "u.data"))
        self._all = self._load()

    def _chunks(self) -> Iterator[Batch]:
        # _load runs after Source.__init__ built this generator; it starts on the first read.
        yield self._all

    def _load(self) -> Batch:
        user, item, rating, ts = self._ratings()
        order = np.argsort(ts, kind="stable")
        user, item, rating = user[order], item[order], rating[order]
        users = _table(self.directory / "u.user", "|", 5)
        items = _table(self.directory / "u.item", "|", 24, encoding="latin-1")
        genre_names = _genre_names(self.directory / "u.genre")
        n = user.size
        columns = {"user": Column(CATEGORICAL, np.arange(n, dtype=np.int64), user),
                   "item": Column(CATEGORICAL, np.arange(n, dtype=np.int64), item)}
        columns.update(_join_users(users, user))
        columns.update(_join_items(items, item, genre_names))
        return Batch(n, columns, (rating >= 4).astype(np.float32))

    def _ratings(self) -> tuple[np.ndarray, ...]:
        """user, item, rating, timestamp columns of u.data; malformed lines skipped."""
        rows = [line.split() for line in (self.directory / "u.data").read_text().splitlines()]
        if all(len(r) == 4 for r in rows):
            try:
                table = np.array(list(itertools.chain.from_iterable(rows)), np.int64)
                return tuple(table.reshape(-1, 4).T)
            except ValueError:
                pass
        return tuple(self._ratings_checked(rows).T)

    def _ratings_checked(self, rows: list[list[str]]) -> np.ndarray:
        """Slow path for a u.data with bad lines: check each line, report the bad ones."""
        good = []
        for i, parts in enumerate(rows, 1):
            if not parts:
                continue
            try:
                if len(parts) != 4:
                    raise ValueError(f"expected 4 fields, got {len(parts)}")
                good.append([int(p) for p in parts])
            except ValueError as exc:
                self.stats.malformed_line(self.name, i, str(exc))
        return np.array(good, dtype=np.int64).reshape(-1, 4)


def _table(path: Path, delimiter: str, ncols: int, encoding: str = "utf-8") -> list[np.ndarray]:
    """Columns (as string arrays) of a small delimited file; lines of other widths dropped."""
    rows = [line.split(delimiter) for line in path.read_text(encoding=encoding).splitlines()]
    rows = [r for r in rows if len(r) == ncols]
    return [np.array([r[j] for r in rows], dtype=str) for j in range(ncols)]


def _genre_names(path: Path) -> np.ndarray:
    """Genre names ordered by their flag index in u.item."""
    pairs = [line.split("|") for line in path.read_text(encoding="latin-1").splitlines()]
    pairs = sorted((int(idx), name) for name, idx in (p for p in pairs if len(p) == 2))
    return np.array([name for _, name in pairs], dtype=str)


def _lookup(ids: np.ndarray, table_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each id, its index in table_ids and whether it is there (ids are small ints)."""
    index = np.full(max(int(table_ids.max(initial=0)), int(ids.max(initial=0))) + 1, -1, np.int64)
    index[table_ids] = np.arange(table_ids.size)
    pos = index[ids]
    return pos, pos >= 0


def _join_users(users: list[np.ndarray], user: np.ndarray) -> dict[str, Column]:
    uid, age, gender, occupation, zipcode = users
    pos, known = _lookup(user, uid.astype(np.int64))
    rows = np.flatnonzero(known)
    pos = pos[known]
    return {"age": Column(NUMERIC, rows, age.astype(np.float64)[pos]),
            "gender": Column(CATEGORICAL, rows, gender[pos]),
            "occupation": Column(CATEGORICAL, rows, occupation[pos]),
            "zip3": Column(CATEGORICAL, rows, zipcode.astype("U3")[pos])}


def _release_years(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Year of dates like "01-Jan-1995" and a mask of those that parse."""
    tail = np.array([d[-4:] for d in dates.tolist()], dtype=str)
    ok = np.char.isdigit(tail) & (np.char.str_len(dates) >= 4)
    years = np.zeros(dates.size, np.float64)
    years[ok] = tail[ok].astype(np.float64)
    return years, ok


def _join_items(items: list[np.ndarray], item: np.ndarray, genre_names: np.ndarray
                ) -> dict[str, Column]:
    iid, dates = items[0].astype(np.int64), items[2]
    flags = np.stack([f == "1" for f in items[5:5 + genre_names.size]], axis=1)
    years, has_year = _release_years(dates)
    pos, known = _lookup(item, iid)
    rows = np.flatnonzero(known)
    pos = pos[known]
    with_year = has_year[pos]
    genre_rows, genre_idx = np.nonzero(flags[pos])  # row-major: rows come out non-decreasing
    return {"genres": Column(CATEGORICAL, rows[genre_rows], genre_names[genre_idx]),
            "year": Column(NUMERIC, rows[with_year], years[pos][with_year])}


# ---------------------------------------------------------------------------------------------

FORMATS = ("jsonl", "tsv", "csv")


def open_source(spec: str, *, schema: str | Sequence[tuple[str, str]] | None = None,
                fmt: str | None = None, header: bool | None = None,
                chunk_lines: int = DEFAULT_CHUNK_LINES, **opts) -> Source:
    """Open the event source a command line names.

    - ``synthetic:N`` or ``synthetic:N:SEED``: a planted-model stream (worker.synthetic);
    - a directory holding u.data: MovieLens 100k;
    - ``*.jsonl`` / ``*.json``: JSON lines; ``*.tsv`` / ``*.csv`` (optionally ``.gz``):
      delimited with `schema` (a .tsv defaults to CRITEO_SCHEMA; a .csv without a schema must
      start with a header naming its columns, one of them "label");
    - ``-``: stdin, as `fmt` ("jsonl" by default, or "tsv"/"csv").
    `fmt` also overrides what a file's extension says. Extra `opts` go to SyntheticStream.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
    if spec.startswith("synthetic:"):
        return _open_synthetic(spec, **opts)
    if opts:
        raise ValueError(f"options {sorted(opts)} only apply to synthetic sources")
    if spec == "-":
        return _open_text("-", fmt or "jsonl", schema, header, chunk_lines)
    path = Path(spec)
    if path.is_dir():
        if (path / "u.data").is_file():
            return MovieLensSource(path)
        raise ValueError(f"{spec} is a directory without u.data (MovieLens 100k expected)")
    if not path.exists():
        raise ValueError(f"no such file: {spec}")
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    ext = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv"}.get(
        suffixes[0] if suffixes else "")
    if fmt is None and ext is None:
        raise ValueError(f"cannot tell the format of {spec}: expected synthetic:N[:SEED], a "
                         "MovieLens directory, or a .jsonl/.json/.tsv/.csv[.gz] file "
                         "(or pass fmt=)")
    return _open_text(path, fmt or ext, schema, header, chunk_lines)


def _open_synthetic(spec: str, **opts) -> Source:
    from worker.synthetic import SyntheticStream  # imports this module: import late

    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise ValueError(f"bad synthetic source {spec!r}: use synthetic:EVENTS or "
                         "synthetic:EVENTS:SEED") from None
    return SyntheticStream(*numbers, **opts)


def _open_text(path, fmt: str, schema, header: bool | None, chunk_lines: int) -> Source:
    if fmt == "jsonl":
        return JsonLinesSource(path, chunk_lines=chunk_lines)
    delimiter = "\t" if fmt == "tsv" else ","
    if header is None:
        header = schema is None and fmt == "csv"
    if schema is None and not header:
        schema = CRITEO_SCHEMA
    return DelimitedSource(path, schema, delimiter=delimiter, header=header,
                           chunk_lines=chunk_lines)
