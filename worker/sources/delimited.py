"""TSV and CSV events: a compiled scan for clean blocks, pyarrow's CSV reader for the rest.

A block of whole lines first goes through `delimited_scan`, which parses labels and numbers
and hashes categorical values in one pass over the bytes. A block it does not take (a line of
the wrong width, a value not written plainly, quotes in CSV, non-ASCII text) goes through
pyarrow's reader, a well-kept columnar parser in C++ whose rules decide what is malformed:
a line with the wrong field count, a label not 0/1 or a number that is not a finite number
is skipped and reported with its line number; the rest of its block is kept. Either way a
categorical column holds the values' string hashes (`common.hashing.hash_strings`), so
blocks from both paths join into one batch and featurize alike. What else stays ours is
reading whole-line blocks (so every line keeps its number, for reports) and turning Arrow
columns into `Column`s without a Python object per value (`arrow_columns`).
"""
from __future__ import annotations

import csv
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from common.features import CATEGORICAL, NUMERIC, Batch, Column
from worker.sources.arrow_columns import (checked_numbers, hashes_of, labels_of, lengths_of,
                                          numbers_of, single)
from worker.sources.delimited_scan import BlockScanner
from worker.sources.lines import DEFAULT_CHUNK_LINES, LineReader, LineSource, MalformedLines
from worker.sources.schema import as_schema, check_schema, schema_from_header

# lines per scanned block: the scan's outputs (a few tens of bytes per line) stay in the
# core's L2 cache until they become columns, and the default batch takes whole blocks
SCAN_LINES = 4096


class DelimitedSource(LineSource):
    """TSV/CSV with a schema of (name, kind): kind is label, num, cat or skip.

    An empty field is a missing value. Labels are 0/1 (also -1 for 0, +1, 0.0/1.0). With
    `header`, the first line names the columns and `schema` (optional) overrides kinds by
    name. A comma-separated file may quote fields ("a, b"); a tab-separated one has no
    quoting (a quote is a character like any other), as in Criteo's files. A quoted field
    may not hold a newline: a line is a line.
    """

    def __init__(self, path_or_file, schema: str | Sequence[tuple[str, str]] | None = None,
                 delimiter: str = "\t", header: bool = False,
                 chunk_lines: int = DEFAULT_CHUNK_LINES):
        if len(delimiter) != 1 or delimiter in "\n\r\"" or ord(delimiter) > 127:
            raise ValueError(f"delimiter must be one ASCII character, got {delimiter!r}")
        self.delimiter, self.chunk_lines = delimiter, chunk_lines
        self._lines = LineReader(path_or_file, binary=True)
        schema = as_schema(schema)
        if header:
            line = self._lines.readline().rstrip("\r\n")
            columns = (next(csv.reader([line]), []) if delimiter == ","
                       else line.split(delimiter))
            schema = schema_from_header(columns, schema or ())
        elif schema is None:
            raise ValueError("a delimited file needs a schema or a header line naming its columns")
        check_schema(schema)
        self.schema = schema
        self._names = [f"f{j}" for j in range(len(schema))]  # unique even if the header is not
        used = [j for j, (_, kind) in enumerate(schema) if kind != "skip"]
        self._used = used
        self._parse = pacsv.ParseOptions(delimiter=delimiter,
                                         quote_char='"' if delimiter == "," else False,
                                         ignore_empty_lines=False,
                                         invalid_row_handler=self._invalid_row)
        self._read = pacsv.ReadOptions(column_names=self._names, use_threads=False,
                                       block_size=1 << 30)
        self._fast = self._convert(number_type=pa.float64())
        self._checked = self._convert(number_type=pa.binary())
        self._bad_rows: list[tuple[int, int]] = []
        self._scanner = BlockScanner([kind for _, kind in schema], delimiter)
        super().__init__(self._lines)

    def _convert(self, number_type: pa.DataType) -> pacsv.ConvertOptions:
        types = {self._names[j]: number_type if self.schema[j][1] == "num" else pa.binary()
                 for j in self._used}
        return pacsv.ConvertOptions(column_types=types, null_values=[""],
                                    strings_can_be_null=False, check_utf8=False,
                                    include_columns=[self._names[j] for j in self._used])

    def _invalid_row(self, row) -> str:
        """pyarrow's callback for a line with the wrong number of fields: remember it, skip it
        (whitespace-only lines are blank, not malformed)."""
        if row.text.strip():
            self._bad_rows.append((row.number, row.actual_columns))
        else:
            self._bad_rows.append((row.number, -1))
        return "skip"

    def _chunks(self) -> Iterator[Batch]:
        for first_line, lines, block in self._lines.line_blocks(min(self.chunk_lines,
                                                                     SCAN_LINES)):
            yield self._parse_block(first_line, block, lines)

    def _parse_block(self, first_line: int, block: bytes, lines: int | None = None) -> Batch:
        scanned = self._scanner.scan(block, block.count(b"\n") if lines is None else lines)
        if scanned is not None:
            return self._from_scan(*scanned)
        return self._read_block(first_line, block)

    def _from_scan(self, labels, numbers, number_rows, number_counts, hashes, hash_rows,
                   hash_counts) -> Batch:
        """A Batch from a clean block's scan (`delimited_scan`): columns in schema order,
        categorical values as their string hashes; each column is a view of its scan row."""
        columns = {}
        for j in self._used:
            name, kind = self.schema[j]
            slot = self._scanner.slots[j]
            if kind == "num":
                n = number_counts[slot]
                columns[name] = Column(NUMERIC, number_rows[slot, :n], numbers[slot, :n])
            elif kind == "cat":
                n = hash_counts[slot]
                columns[name] = Column(CATEGORICAL, hash_rows[slot, :n], hashes[slot, :n])
        return Batch(labels.size, columns, labels)

    def _read_block(self, first_line: int, block: bytes) -> Batch:
        """pyarrow's reading of a block the scan did not take: the rules for malformed lines."""
        bad = MalformedLines()
        self._bad_rows = []
        buf = pa.py_buffer(block)
        try:
            table, checked = pacsv.read_csv(buf, self._read, self._parse, self._fast), False
        except pa.ArrowInvalid:  # some "num" field is not a number: find which, vectorized
            self._bad_rows = []
            table, checked = pacsv.read_csv(buf, self._read, self._parse, self._checked), True
        skipped = np.array(sorted(number - 1 for number, _ in self._bad_rows), np.int64)
        for number, got in self._bad_rows:
            if got >= 0:
                bad.add(number - 1, f"expected {len(self.schema)} fields, got {got}")
        line_of = _line_numbers(table.num_rows, skipped)  # 0-based line in the block, per row
        batch = self._build(table, checked, line_of, bad)
        bad.report(self.stats, self.name, first_line)
        return batch

    def _build(self, table: pa.Table, checked: bool, line_of: np.ndarray,
               bad: MalformedLines) -> Batch:
        """Decode each column; drop rows with a bad label or number, and blank lines."""
        m = table.num_rows
        invalid = np.zeros(m, bool)
        parsed: dict[str, tuple[str, np.ndarray, object]] = {}
        labels = np.zeros(m, np.float32)
        for j in self._used:
            name, kind = self.schema[j]
            arr = single(table.column(self._names[j]))
            if kind == "label":
                labels, not_label = labels_of(arr)
                if not_label.any():
                    blank = self._blank_rows(table, not_label)
                    for i in np.flatnonzero(not_label & ~blank):
                        bad.add(line_of[i], "label must be 0 or 1, got "
                                f"{_text(arr, i)!r}")
                invalid |= not_label
            elif kind == "cat":
                present = lengths_of(arr) > 0
                parsed[name] = (CATEGORICAL, present, arr)
            else:
                if checked:
                    present, values, not_number, not_finite = checked_numbers(arr)
                else:
                    present, values, not_finite = numbers_of(arr)
                where = np.flatnonzero(present)[not_finite]
                for i in where:
                    bad.add(line_of[i], f"field {name!r} is not a finite number: "
                                        f"{_text(arr, i)!r}")
                invalid[where] = True
                parsed[name] = (NUMERIC, present, values)
        return _assemble(m, invalid, parsed, labels)

    def _blank_rows(self, table: pa.Table, among: np.ndarray) -> np.ndarray:
        """Rows (among `among`) of lines with nothing in any field: blank lines."""
        blank = among.copy()
        for j in self._used:
            arr = single(table.column(self._names[j]))
            if pa.types.is_binary(arr.type):
                blank &= lengths_of(arr) == 0
            else:
                blank &= ~np.asarray(arr.is_valid())
        return blank


def _line_numbers(rows: int, skipped: np.ndarray) -> np.ndarray:
    """0-based line index in the block of each row, given the lines pyarrow skipped."""
    r = np.arange(rows, dtype=np.int64)
    if skipped.size == 0:
        return r
    rows_before = skipped - np.arange(skipped.size)  # rows read before each skipped line
    return r + np.searchsorted(rows_before, r, side="right")


def _text(arr: pa.Array, i: int) -> str:
    """Field i of a column as text, for messages."""
    value = arr[int(i)].as_py()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _assemble(m: int, invalid: np.ndarray, parsed: dict, labels: np.ndarray) -> Batch:
    """A Batch from per-row columns: drop invalid rows; `values` hold present fields only.
    Strings are decoded only for the rows kept."""
    keep = ~invalid
    new_row = np.cumsum(keep) - 1
    columns = {}
    for name, (kind, present, values) in parsed.items():
        rows = np.flatnonzero(present)
        kept = keep[rows]
        if kind == CATEGORICAL:  # hashed, as the scan hands them over
            values = hashes_of(values, rows[kept])
        else:
            values = values[kept]
        columns[name] = Column(kind, new_row[rows[kept]], values)
    return Batch(int(keep.sum()), columns, labels[keep])
