"""pyarrow's CSV reader for the blocks of a TSV/CSV file the compiled scan declines.

Its rules decide what is malformed: a line with the wrong field count, a label not 0/1 or a
number that is not a finite number is skipped and reported with its line number, and the
rest of its block is kept. Categorical columns become their values' string hashes, as the
scan gives them, so blocks from both paths join into one batch (`delimited`). Its own module
so that reading a clean file never imports pyarrow.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from common.features import CATEGORICAL, NUMERIC, Batch, Column
from worker.sources.arrow_columns import (checked_numbers, hashes_of, labels_of, lengths_of,
                                          numbers_of, single)
from worker.sources.lines import MalformedLines


class ArrowBlocks:
    """pyarrow's reading of delimited blocks for one schema (its options made once)."""

    def __init__(self, schema, names: list[str], used: list[int], delimiter: str):
        self.schema, self.names, self.used = schema, names, used
        self._parse = pacsv.ParseOptions(delimiter=delimiter,
                                         quote_char='"' if delimiter == "," else False,
                                         ignore_empty_lines=False,
                                         invalid_row_handler=self._invalid_row)
        self._read = pacsv.ReadOptions(column_names=names, use_threads=False,
                                       block_size=1 << 30)
        self._fast = self._convert(number_type=pa.float64())
        self._checked = self._convert(number_type=pa.binary())
        self._bad_rows: list[tuple[int, int]] = []

    def _convert(self, number_type: pa.DataType) -> pacsv.ConvertOptions:
        types = {self.names[j]: number_type if self.schema[j][1] == "num" else pa.binary()
                 for j in self.used}
        return pacsv.ConvertOptions(column_types=types, null_values=[""],
                                    strings_can_be_null=False, check_utf8=False,
                                    include_columns=[self.names[j] for j in self.used])

    def _invalid_row(self, row) -> str:
        """pyarrow's callback for a line with the wrong number of fields: remember it, skip it
        (whitespace-only lines are blank, not malformed)."""
        if row.text.strip():
            self._bad_rows.append((row.number, row.actual_columns))
        else:
            self._bad_rows.append((row.number, -1))
        return "skip"

    def read(self, first_line: int, block: bytes, stats, name: str) -> Batch:
        """The good lines of a block as a Batch; the malformed ones counted in `stats` and
        reported by their number (the block starts at line `first_line` of input `name`)."""
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
        bad.report(stats, name, first_line)
        return batch

    def _build(self, table: pa.Table, checked: bool, line_of: np.ndarray,
               bad: MalformedLines) -> Batch:
        """Decode each column; drop rows with a bad label or number, and blank lines."""
        m = table.num_rows
        invalid = np.zeros(m, bool)
        parsed: dict[str, tuple[str, np.ndarray, object]] = {}
        labels = np.zeros(m, np.float32)
        for j in self.used:
            name, kind = self.schema[j]
            arr = single(table.column(self.names[j]))
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
        for j in self.used:
            arr = single(table.column(self.names[j]))
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
