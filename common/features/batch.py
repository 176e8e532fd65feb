"""Columnar mini-batches of events and the feature ids made from them.

Why columnar: a field's values sit in one numpy array with the row (event index) of each, so
single-valued, missing and multi-valued fields share one representation, and every later step
(hashing, bucketizing, crossing, scoring) is a whole-array numpy call, never a loop over events.
A batch that a reader met line by line may carry its values in that order instead
(`common.features.entries`), its columns then made from them only when something asks.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from common.features.entries import Entries, concat_entries
from common.hashing import hash_strings

CATEGORICAL = "cat"
NUMERIC = "num"


@dataclass
class Column:
    """Values of one field; ``values[i]`` belongs to event ``rows[i]`` (rows non-decreasing).

    Rows beside values (rather than one value per event) let a field be missing from some events
    and hold several values in others without padding.
    """

    kind: str  # CATEGORICAL (str or int values) or NUMERIC (float values)
    rows: np.ndarray
    values: np.ndarray

    @classmethod
    def dense(cls, kind: str, values: np.ndarray, present: np.ndarray | None = None) -> "Column":
        """One value per event; `present` masks out missing ones."""
        values = np.asarray(values)
        rows = np.arange(values.shape[0], dtype=np.int64)
        if present is not None:
            rows, values = rows[present], values[present]
        return cls(kind, rows, values)


def columns_of(entries: Entries) -> dict[str, Column]:
    """The same values as one `Column` per field (rows in event order, values in the kind
    the columnar readers give: uint64 hashes or int64 ids, float64 numbers)."""
    order = np.argsort(entries.fields, kind="stable")
    counts = np.bincount(entries.fields, minlength=len(entries.names)) if entries.fields.size \
        else np.zeros(len(entries.names), np.int64)
    rows = np.repeat(np.arange(entries.n, dtype=np.int64), np.diff(entries.offsets))[order]
    words = entries.words[order]
    columns, lo = {}, 0
    for name, kind, count in zip(entries.names, entries.kinds, counts.tolist()):
        values = words[lo:lo + count]
        columns[name] = Column(kind, rows[lo:lo + count],
                               values.view(np.float64) if kind == NUMERIC else values)
        lo += count
    return columns


class EntryColumns(Mapping):
    """A batch's `columns` made from its `Entries` the first time they are asked for."""

    def __init__(self, entries: Entries):
        self._entries = entries
        self._columns: dict[str, Column] | None = None

    def _made(self) -> dict[str, Column]:
        if self._columns is None:
            self._columns = columns_of(self._entries)
        return self._columns

    def __getitem__(self, name: str) -> Column:
        return self._made()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries.names)

    def __len__(self) -> int:
        return len(self._entries.names)

    def __contains__(self, name: object) -> bool:
        return name in self._entries.names


@dataclass
class Batch:
    """A mini-batch of events in columnar form: what sources produce and the featurizer reads,
    in workers and replicas alike, so both featurize an event the same way."""

    n: int
    columns: Mapping[str, Column]
    labels: np.ndarray | None = None  # float32 0/1
    weights: np.ndarray | None = None  # float32 importance weights
    # the values event by event, where a reader has them so (`common.features.entries`);
    # `columns` are then made from them only when asked for
    entries: Entries | None = None

    @classmethod
    def of_entries(cls, entries: Entries, labels: np.ndarray | None = None,
                   weights: np.ndarray | None = None) -> "Batch":
        return cls(entries.n, EntryColumns(entries), labels, weights, entries)

    def slice(self, start: int, stop: int) -> "Batch":
        """Events [start, stop) as a new batch (rows renumbered from 0); the batch itself when
        that is all of it (batches are not changed in place)."""
        if start <= 0 and stop >= self.n:
            return self
        labels = None if self.labels is None else self.labels[start:stop]
        weights = None if self.weights is None else self.weights[start:stop]
        if self.entries is not None:
            return Batch.of_entries(self.entries.slice(start, min(stop, self.n)), labels,
                                    weights)
        cols = {}
        for name, col in self.columns.items():
            lo, hi = np.searchsorted(col.rows, [start, stop])
            cols[name] = Column(col.kind, col.rows[lo:hi] - start, col.values[lo:hi])
        return Batch(min(stop, self.n) - start, cols, labels, weights)


class Features:
    """Feature ids of a batch: event ``rows[i]`` has feature ``ids[i]`` (value 1).

    Kept as (row, id) pairs, the form scoring and gradients reduce with one bincount, rather
    than per-event lists. When the entries are grouped by event (rows non-decreasing),
    `offsets` says where each event's start: event i's are ``offsets[i]:offsets[i + 1]``
    (int64, n + 1; None when they are not grouped). Features made so may come without their
    rows (None), which are then made from the offsets when first asked for: a linear model
    learns from the offsets alone, and writing a row per entry would cost it a pass of memory.
    """

    __slots__ = ("n", "ids", "offsets", "_rows")

    def __init__(self, n: int, rows: np.ndarray | None, ids: np.ndarray,
                 offsets: np.ndarray | None = None):
        if rows is None and offsets is None:
            raise ValueError("Features without rows need the offsets of their events")
        self.n, self._rows, self.ids, self.offsets = n, rows, ids, offsets

    @property
    def rows(self) -> np.ndarray:
        """The event of each entry (int64)."""
        if self._rows is None:
            self._rows = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.offsets))
        return self._rows

    def __repr__(self) -> str:
        return f"Features(n={self.n}, entries={self.ids.size}, grouped={self.offsets is not None})"

    def to_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, ids): event i's ids are ``ids[offsets[i]:offsets[i + 1]]``, in the order
        they have here: the form pre-hashed reads travel in (`PredictIds`). Rows must lie in
        [0, n)."""
        offsets = np.zeros(self.n + 1, np.int64)
        np.cumsum(np.bincount(self.rows, minlength=self.n), out=offsets[1:])
        return offsets, self.ids[np.argsort(self.rows, kind="stable")]


def concat_batches(batches: Iterable[Batch]) -> Batch:
    """Join batches end to end (used by sources that read in chunks); by their entries when
    every one has them alike."""
    batches = list(batches)
    if batches and all(b.entries is not None for b in batches):
        entries = concat_entries([b.entries for b in batches])
        if entries is not None:
            joined = concat_batches([Batch(b.n, {}, b.labels, b.weights) for b in batches])
            return Batch.of_entries(entries, joined.labels, joined.weights)
    n = 0
    cols: dict[str, list[Column]] = {}
    for b in batches:
        for name, c in b.columns.items():
            cols.setdefault(name, []).append(Column(c.kind, c.rows + n, c.values))
        n += b.n
    merged = {name: Column(parts[0].kind, np.concatenate([p.rows for p in parts]),
                           np.concatenate(_alike([p.values for p in parts])))
              for name, parts in cols.items()}
    labels = (np.concatenate([b.labels for b in batches])
              if batches and all(b.labels is not None for b in batches) else None)
    weights = None
    if any(b.weights is not None for b in batches):
        weights = np.concatenate([b.weights if b.weights is not None else np.ones(b.n, np.float32)
                                  for b in batches])
    return Batch(n, merged, labels, weights)


def _alike(values: list[np.ndarray]) -> list[np.ndarray]:
    """One categorical field's parts in one form: where a reader hashed some chunks' strings in
    its buffers (uint64 string hashes) and not others, the strings become their hashes, which
    is what the featurizer would make of them."""
    kinds = {v.dtype.kind for v in values}
    if "u" in kinds and kinds & {"U", "S"}:
        return [hash_strings(v) if v.dtype.kind in "US" else v for v in values]
    return values


def pieces(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Consecutive views of `array` with the given sizes (np.split costs far more per piece)."""
    ends = itertools.accumulate(sizes)
    return [array[end - size:end] for size, end in zip(sizes, ends)]
