"""TSV and CSV events: a compiled scan for clean blocks, pyarrow's CSV reader for the rest.

A block of whole lines first goes through `delimited_scan`, which parses labels and numbers
and hashes categorical values in one pass over the bytes. A block it does not take (a line of
the wrong width, a value not written plainly, quotes in CSV, non-ASCII text) goes through
pyarrow's reader, a well-kept columnar parser in C++ whose rules decide what is malformed:
a line with the wrong field count, a label not 0/1 or a number that is not a finite number
is skipped and reported with its line number; the rest of its block is kept. Either way a
categorical column holds the values' string hashes (`common.hashing.hash_strings`), so
blocks from both paths join into one batch and featurize alike. A scanned block's values come
event by event, as the scan meets them (`common.features.entries`), and are featurized so. What else stays ours is
reading whole-line blocks (so every line keeps its number, for reports) and turning Arrow
columns into `Column`s without a Python object per value (`delimited_arrow`, `arrow_columns`,
imported for the first block the scan declines).
"""
from __future__ import annotations

import csv
from typing import Iterator, Sequence

from common.features import CATEGORICAL, NUMERIC, Batch
from common.features.entries import Entries
from worker.sources.delimited_scan import BlockScanner
from worker.sources.lines import DEFAULT_CHUNK_LINES, LineReader, LineSource
from worker.sources.schema import as_schema, check_schema, schema_from_header

# lines per scanned block: as many as `deltaps train`'s default batch of a linear model
# (`deploy.nodes.worker.DEFAULT_BATCH`), so a batch is one block's entries as they are, not
# two blocks' joined; much larger blocks lose more to the caches than they save in calls
SCAN_LINES = 8192


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
        self._arrow = None  # pyarrow's reader, made for the first block the scan declines
        # a name given twice keeps its last column, as a batch's columns by name do
        last = {name: j for j, (name, _) in enumerate(schema)}
        self._scanner = BlockScanner([kind if last[name] == j or kind == "label" else "skip"
                                      for j, (name, kind) in enumerate(schema)], delimiter)
        # a clean block's values come event by event (`Entries`), its fields in schema order
        self._value_names = tuple(schema[j][0] for j in self._scanner.values)
        self._value_kinds = tuple(NUMERIC if schema[j][1] == "num" else CATEGORICAL
                                  for j in self._scanner.values)
        super().__init__(self._lines)

    def _chunks(self) -> Iterator[Batch]:
        for first_line, lines, block in self._lines.line_blocks(min(self.chunk_lines,
                                                                     SCAN_LINES)):
            yield self._parse_block(first_line, block, lines)

    def _parse_block(self, first_line: int, block: bytes, lines: int | None = None) -> Batch:
        scanned = self._scanner.scan(block, block.count(b"\n") if lines is None else lines)
        if scanned is not None:
            return Batch.of_entries(Entries(self._value_names, self._value_kinds,
                                            scanned.offsets, scanned.fields, scanned.words),
                                    scanned.labels)
        return self._read_block(first_line, block)

    def _read_block(self, first_line: int, block: bytes) -> Batch:
        """pyarrow's reading of a block the scan did not take (`delimited_arrow`), which also
        decides what is malformed: imported only then, so a clean file never loads it."""
        if self._arrow is None:
            from worker.sources.delimited_arrow import ArrowBlocks
            self._arrow = ArrowBlocks(self.schema, self._names, self._used, self.delimiter)
        return self._arrow.read(first_line, block, self.stats, self.name)
