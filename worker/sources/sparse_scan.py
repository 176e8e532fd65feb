"""A compiled scan of a block of VW text or libsvm lines: labels, weights, numbers and feature
name hashes in one pass over the bytes, the same events `sparse_text.parse_block` reads.

Why by hand, beside the numpy reader: that reader builds several arrays per token and a
unicode string per feature name only for the name to be hashed later, which made a .vw file
read many times slower than the same events as TSV (and than VW itself). The scan takes only
the clean case, which is nearly every block of a real file: no NUL byte, names in well-formed
UTF-8, every line labelled, weights and values written plainly (`scan_kernel._parse_number`:
the value numpy would parse), every feature named, and at most `MAX_SPACES` namespaces and
`MAX_FIELDS` numeric fields a block. Anything else, the block goes through `parse_block`, whose rules and
messages decide what is malformed; so the scan never judges a line, it only says "not mine".

A categorical value comes out as the `common.hashing.hash_strings` hash of its name, as the
numpy reader's strings are hashed (`sparse_text`), so both paths give the same ids. The field
set comes from the data: the kernel numbers the namespaces and numeric fields of the block,
and their names and columns are made here, with Python work per distinct field only.
"""
from __future__ import annotations

import numpy as np

from common.features import CATEGORICAL, NUMERIC, Batch, Column
from worker.sources import compiled
from worker.sources.delimited_scan import ONE_LENGTHS, ONES, POW10, ZERO_LENGTHS, ZEROS

DEFAULT_NAMESPACE = "default"
MAX_SPACES = 256  # namespaces a block (a VW file has a few)
MAX_FIELDS = 1 << 14  # numeric fields a block
_SLOTS = 2 * MAX_FIELDS  # the kernel's field table, at most half full


def _classes(ends: bytes) -> np.ndarray:
    """What each byte is in a token (`sparse_kernel`): plain, an end, a colon, not taken (NUL)
    or part of a UTF-8 sequence."""
    table = np.zeros(256, np.uint8)
    table[list(ends)] = 1
    table[ord(":")] = 2
    table[0] = 3
    table[128:] = 4  # UTF-8: a name holding it is hashed as its code points
    return table


_CLASSES = {False: _classes(b" \t\r\n|"), True: _classes(b" \t\r\n")}  # by libsvm


class SparseScanner:
    """The scan for one source (`libsvm` or VW text), with its scratch arrays: the kernel's
    entries are written to the same warm memory block after block, and each column is copied
    out at its size, so a batch holds no more memory than its events need."""

    def __init__(self, libsvm: bool):
        self.libsvm = libsvm
        self.classes = _CLASSES[libsvm]
        self.spaces = np.empty((MAX_SPACES, 2), np.int64)
        self.field_space = np.empty(MAX_FIELDS, np.int64)
        self.field_span = np.empty((MAX_FIELDS, 2), np.int64)
        self.field_hash = np.empty(MAX_FIELDS, np.uint64)
        self.slots = np.empty(_SLOTS, np.int64)
        self.counts = np.zeros(6, np.int64)
        self._entries: tuple[np.ndarray, ...] = ()
        self._grow(0)

    def _grow(self, bound: int) -> None:
        # a namespace's or numeric field's index fits an int16: fewer bytes written, and
        # numpy sorts int16 by radix
        self._entries = tuple(np.empty(bound, dtype) for dtype in (
            np.int16, np.int64, np.uint64, np.int16, np.int64, np.float64))

    def scan(self, block: bytes, lines: int) -> Batch | None:
        """The events of `lines` whole lines (`block` ends in LF), or None when the block
        must go through `parse_block`."""
        data = np.frombuffer(block, np.uint8)
        bound = data.size // 2 + 1  # a token is a byte and a separator at least
        if self._entries[0].size < bound:
            self._grow(bound)
        cat_space, cat_row, cat_hash, num_field, num_row, num_value = self._entries
        labels, weights = np.zeros(lines, np.float32), np.ones(lines, np.float32)
        spaces, field_space, field_span = self.spaces, self.field_space, self.field_span
        if compiled.scan_sparse(data, lines, int(self.libsvm), self.classes, POW10, ONES,
                                ONE_LENGTHS, ZEROS, ZERO_LENGTHS, labels, weights,
                                cat_space, cat_row, cat_hash, num_field, num_row, num_value,
                                spaces, field_space, field_span, self.field_hash,
                                self.slots, self.counts) >= 0:
            return None
        n, n_cat, n_num, n_spaces, n_fields, weighted = self.counts.tolist()
        try:  # names that are not well-formed UTF-8 are `parse_block`'s to replace
            if self.libsvm:
                space_names = [DEFAULT_NAMESPACE]
            else:
                space_names = [block[a:b].decode("utf-8") or DEFAULT_NAMESPACE
                               for a, b in spaces[:n_spaces].tolist()]
            keys = [block[a:b].decode("utf-8") for a, b in field_span[:n_fields].tolist()]
        except UnicodeDecodeError:
            return None
        for f, s in enumerate(field_space[:n_fields].tolist()):
            if space_names[s] != DEFAULT_NAMESPACE:  # a numeric feature elsewhere: "ns.name"
                keys[f] = f"{space_names[s]}.{keys[f]}"
        if len(set(space_names)) < n_spaces or len(set(keys)) < n_fields:
            return None  # "|" and "|default", or "|a b.c:2" and "|a.b c:2": one field each
        columns: dict[str, Column] = {}
        _group(columns, CATEGORICAL, space_names, cat_space[:n_cat], cat_row[:n_cat],
               cat_hash[:n_cat])
        # as `parse_block`: a numeric field named like a namespace replaces its column
        _group(columns, NUMERIC, keys, num_field[:n_num], num_row[:n_num], num_value[:n_num])
        return Batch(n, columns, labels[:n], weights[:n] if weighted else None)


def scan(block: bytes, lines: int, libsvm: bool) -> Batch | None:
    """`SparseScanner.scan` of one block."""
    return SparseScanner(libsvm).scan(block, lines)


def _group(columns: dict, kind: str, names: list[str], field: np.ndarray, rows: np.ndarray,
           values: np.ndarray) -> None:
    """Add the entries' columns to `columns` in order of name, each in entry (line) order, as
    `parse_block` orders them; each column a copy (the entries are the scanner's scratch)."""
    if field.size == 0:
        return
    if len(names) == 1:  # one namespace (libsvm, and many VW files)
        columns[names[0]] = Column(kind, rows.copy(), values.copy())
        return
    sizes = np.bincount(field, minlength=len(names))
    present = np.flatnonzero(sizes).tolist()
    if len(present) == 1:
        columns[names[present[0]]] = Column(kind, rows.copy(), values.copy())
        return
    order = np.argsort(field, kind="stable")  # int16: a radix sort
    rows, values = rows[order], values[order]
    bounds = np.concatenate(([0], np.cumsum(sizes))).tolist()
    for f in sorted(present, key=names.__getitem__):
        columns[names[f]] = Column(kind, rows[bounds[f]:bounds[f + 1]],
                                   values[bounds[f]:bounds[f + 1]])
