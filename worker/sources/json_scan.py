"""A compiled scan of a block of JSON lines: labels, weights, numbers and string hashes in one
pass over the bytes, the same `Batch` pyarrow's reader gives (`jsonl_arrow.to_batch`).

Why by hand, beside pyarrow's reader: pyarrow.json builds a table of structs and strings that
is then taken apart again field by field, and reading a JSON lines file cost several times
what the same events cost as TSV. The scan takes only the clean, common shape, which is
nearly every block of a real file: ``{"label": 0|1|-1|true|false, "features": {flat object of
numbers and strings}, "weight"?: w}`` with keys in any order (a numeric label may be written
as a float, 1.0; a line may end in CR LF), printable ASCII feature names,
strings without escapes and numbers as `scan_kernel._parse_number` converts them exactly
(Clinger's fast path, so equal to what pyarrow parses). Anything else, and the block goes
through pyarrow and then line by line (`JsonLinesSource`), whose rules and messages decide
what is malformed; so the scan never judges a line, it only says "not mine".

What comes out is `to_batch`'s batch exactly: a string is the `common.hashing.hash_strings`
hash of its text (as `arrow_columns.hashes_of` gives it), a number its float64; fields are
in order of first appearance in the block, categorical ones first (pyarrow's struct order,
then `to_batch`'s split); a field that is a number in one event and a string in another is
declined, as pyarrow declines it. The kernel numbers the fields and sorts the entries by
field; names and columns are made here, with Python work per distinct field only.
"""
from __future__ import annotations

import numpy as np

from common.features import CATEGORICAL, NUMERIC, Batch, Column
from worker.sources import compiled
from worker.sources.delimited_scan import POW10

MAX_FIELDS = 1 << 14  # fields a block (int16 field indexes)
_SLOTS = 2 * MAX_FIELDS  # the kernel's field table, at most half full
_ENTRY_BYTES = 6  # the fewest bytes a feature takes: "a":1 and a comma or brace
_CAT = 2  # `json_kernel._CAT`


class JsonScanner:
    """The scan for one source, with its scratch arrays: the kernel writes the same warm
    memory block after block, and each kind's entries are copied out at their size, so a
    batch holds no more memory than its events need."""

    def __init__(self):
        self.field_span = np.empty((MAX_FIELDS, 2), np.int64)
        self.fields = tuple(np.empty(MAX_FIELDS, dtype) for dtype in (
            np.uint64, np.int64, np.int64, np.int64, np.int64))
        self.slots = np.empty(_SLOTS, np.int64)
        self.counts = np.zeros(5, np.int64)
        self._entries: tuple[np.ndarray, ...] = ()
        self._grow(0)

    def _grow(self, bound: int) -> None:
        self._entries = tuple(np.empty(bound, dtype) for dtype in (
            np.int16, np.int64, np.float64, np.uint64, np.int64, np.uint64, np.int64,
            np.float64))

    def scan(self, block: bytes, lines: int) -> Batch | None:
        """The events of `lines` whole lines (`block` ends in LF), or None when the block
        must go through pyarrow's reader."""
        data = np.frombuffer(block, np.uint8)
        bound = data.size // _ENTRY_BYTES + 1
        if self._entries[0].size < bound:
            self._grow(bound)
        labels, weights = np.zeros(lines, np.float32), np.ones(lines, np.float32)
        field_hash, field_kind, field_last, field_size, field_start = self.fields
        cat_rows, cat_hash, num_rows, num_values = self._entries[4:]
        if compiled.scan_json(data, lines, POW10, labels, weights, *self._entries[:4],
                              self.field_span, field_hash, field_kind, field_last,
                              field_size, field_start, self.slots, cat_rows, cat_hash,
                              num_rows, num_values, self.counts) >= 0:
            return None
        n, n_ent, n_fields, weighted, n_cat = self.counts.tolist()
        names = [block[a:b].decode("ascii") for a, b in self.field_span[:n_fields].tolist()]
        columns: dict[str, Column] = {}
        kinds = field_kind[:n_fields]
        sizes = field_size[:n_fields]
        for kind, is_kind, rows, values, size in (
                (CATEGORICAL, kinds == _CAT, cat_rows, cat_hash, n_cat),
                (NUMERIC, kinds != _CAT, num_rows, num_values, n_ent - n_cat)):
            if not size:
                continue
            rows, values = rows[:size].copy(), values[:size].copy()
            at = 0
            for f, count in zip(np.flatnonzero(is_kind).tolist(), sizes[is_kind].tolist()):
                columns[names[f]] = Column(kind, rows[at:at + count], values[at:at + count])
                at += count
        return Batch(n, columns, labels, weights if weighted else None)
