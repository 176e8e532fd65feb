"""Featurization: events -> 64-bit feature ids, the same code in workers and serving replicas.

A batch is columnar: each field is a `Column` holding its values and the row (event index) each
value belongs to, so single-valued, missing and multi-valued fields share one representation.
`Featurizer` turns a `Batch` into a `Features` list of (row, id) pairs with whole-column numpy
operations: hashing, numeric discretization and crosses never loop over events.

An event is ``{"label": 0|1, "features": {field: value}, "weight": w?}`` where a value is a
string (categorical), a number (numeric: discretized by the field's transform), or a list of
strings/integers (multi-valued categorical). `columnarize` builds a `Batch` from such dicts.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from common.errors import InvalidInstance
from common.hashing import combine, hash_ints, hash_string, hash_strings

CATEGORICAL = "cat"
NUMERIC = "num"
BIAS_ID = hash_string("\x00bias")
_CROSS_TAG = hash_string("\x00cross")


@dataclass
class Column:
    """Values of one field; ``values[i]`` belongs to event ``rows[i]`` (rows non-decreasing)."""

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


@dataclass
class Batch:
    """A mini-batch of events in columnar form."""

    n: int
    columns: dict[str, Column]
    labels: np.ndarray | None = None  # float32 0/1
    weights: np.ndarray | None = None  # float32 importance weights

    def slice(self, start: int, stop: int) -> "Batch":
        """Events [start, stop) as a new batch (rows renumbered from 0)."""
        cols = {}
        for name, col in self.columns.items():
            lo, hi = np.searchsorted(col.rows, [start, stop])
            cols[name] = Column(col.kind, col.rows[lo:hi] - start, col.values[lo:hi])
        pick = (lambda a: None if a is None else a[start:stop])
        return Batch(min(stop, self.n) - start, cols, pick(self.labels), pick(self.weights))


@dataclass
class Features:
    """Feature ids of a batch: event ``rows[i]`` has feature ``ids[i]`` (value 1)."""

    n: int
    rows: np.ndarray  # int64
    ids: np.ndarray  # uint64


@dataclass
class Transform:
    """How a numeric field becomes a categorical bucket.

    kind: "log2" buckets by sign(x)*floor(log2(1+|x|)); "buckets" by the index of the first
    boundary above x; "categorical" keeps integer values as ids (e.g. user ids sent as numbers).
    """

    kind: str = "log2"
    boundaries: Sequence[float] = ()

    def bucketize(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if self.kind == "log2":
            return (np.sign(x) * np.floor(np.log2(1.0 + np.abs(x)))).astype(np.int64)
        if self.kind == "buckets":
            return np.searchsorted(np.asarray(self.boundaries, dtype=np.float64), x, side="right")
        if self.kind == "categorical":
            return np.round(x).astype(np.int64)
        raise ValueError(f"unknown transform kind {self.kind!r}")


@dataclass
class FeatureSpec:
    """What a model sees of an event: which fields, their numeric transforms, and crosses."""

    fields: Sequence[str] = ()  # empty: every field an event has
    transforms: Mapping[str, Transform] = field(default_factory=dict)
    crosses: Sequence[Sequence[str]] = ()
    bias: bool = True


class Featurizer:
    """Turns a `Batch` into `Features` for one `FeatureSpec`; pure and vectorized.

    A feature's id is its value hashed with the hash of its field's name as seed: integer
    values and numeric buckets of every column go through one splitmix64 pass together;
    string columns are hashed column by column.
    """

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self._field_seed: dict[str, np.uint64] = {}
        self._default_transform = Transform("log2")

    def field_seed(self, name: str) -> np.uint64:
        seed = self._field_seed.get(name)
        if seed is None:
            seed = self._field_seed[name] = np.uint64(hash_string(name))
        return seed

    def field_ids(self, batch: Batch, names) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(rows, ids) of each named field present in the batch.

        Numeric columns sharing a transform are bucketized in one call, every integer value
        (ids and buckets) of every column is hashed in one pass and every string in another,
        so the numpy calls per batch barely grow with the number of fields: what keeps a
        one-event batch cheap.
        """
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        ints: dict[str, np.ndarray] = {}
        strings: dict[str, np.ndarray] = {}
        numeric: dict[tuple, list[str]] = {}
        for name in names:
            col = batch.columns.get(name)
            if col is None or col.rows.size == 0:
                continue
            if col.kind == NUMERIC:
                t = self.spec.transforms.get(name, self._default_transform)
                numeric.setdefault((t.kind, tuple(t.boundaries)), []).append(name)
            elif col.values.dtype.kind in "iu":
                ints[name] = col.values
            else:
                strings[name] = col.values
        if strings:
            sizes = [v.size for v in strings.values()]
            seeds = np.repeat(np.array([self.field_seed(n) for n in strings], np.uint64), sizes)
            values = list(strings.values())
            ids = hash_strings(values[0] if len(values) == 1 else np.concatenate(values), seeds)
            for name, part in zip(strings, _pieces(ids, sizes)):
                out[name] = (batch.columns[name].rows, part)
        for (kind, boundaries), group in numeric.items():
            values = [batch.columns[n].values for n in group]
            buckets = Transform(kind, boundaries).bucketize(
                values[0] if len(values) == 1 else np.concatenate(values))
            ints.update(zip(group, _pieces(buckets, [v.size for v in values])))
        if ints:
            sizes = [v.size for v in ints.values()]
            seeds = np.repeat(np.array([self.field_seed(n) for n in ints], np.uint64), sizes)
            ids = hash_ints(np.concatenate(list(ints.values())), seeds)
            for name, part in zip(ints, _pieces(ids, sizes)):
                out[name] = (batch.columns[name].rows, part)
        return out

    def featurize(self, batch: Batch) -> Features:
        wanted = list(self.spec.fields or batch.columns)
        crossed = {f for cross in self.spec.crosses for f in cross}
        per_field = self.field_ids(batch, wanted + sorted(crossed - set(wanted)))
        parts_rows = [per_field[name][0] for name in wanted if name in per_field]
        parts_ids = [per_field[name][1] for name in wanted if name in per_field]
        for cross in self.spec.crosses:
            rows, ids = cross_ids([per_field.get(f) for f in cross])
            parts_rows.append(rows)
            parts_ids.append(ids)
        if self.spec.bias:
            parts_rows.append(np.arange(batch.n, dtype=np.int64))
            parts_ids.append(np.full(batch.n, BIAS_ID, dtype=np.uint64))
        if not parts_rows:
            return Features(batch.n, np.zeros(0, np.int64), np.zeros(0, np.uint64))
        return Features(batch.n, np.concatenate(parts_rows).astype(np.int64, copy=False),
                        np.concatenate(parts_ids))


def _pieces(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Consecutive views of `array` with the given sizes (np.split costs ~10x more per piece)."""
    ends = itertools.accumulate(sizes)
    return [array[end - size:end] for size, end in zip(sizes, ends)]


def cross_ids(parts: list[tuple[np.ndarray, np.ndarray] | None]) -> tuple[np.ndarray, np.ndarray]:
    """All combinations, per event, of one value from each part (rows must be non-decreasing).

    For a pair of parts A and B, an event with a values of A and b of B yields a*b crossed ids.
    Implemented with repeat/cumsum arithmetic on whole arrays.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.uint64))
    if any(p is None for p in parts):
        return empty
    rows, ids = parts[0]
    ids = ids ^ np.uint64(_CROSS_TAG)  # a cross never equals a plain feature of its fields
    for rows_b, ids_b in parts[1:]:
        if rows.size == 0 or rows_b.size == 0:
            return empty
        n = int(max(rows.max(), rows_b.max())) + 1
        count_b = np.bincount(rows_b, minlength=n)
        start_b = np.concatenate(([0], np.cumsum(count_b)[:-1]))
        reps = count_b[rows]  # partners of each A entry
        a_idx = np.repeat(np.arange(rows.size), reps)
        block_start = np.repeat(np.cumsum(reps) - reps, reps)
        offset = np.arange(a_idx.size) - block_start
        b_idx = start_b[rows[a_idx]] + offset
        rows, ids = rows[a_idx], combine(ids[a_idx], ids_b[b_idx])
    return rows, ids


def columnarize(events: Sequence[Mapping], *, with_labels: bool) -> Batch:
    """Build a `Batch` from event dicts (JSON lines, predict instances).

    Raises `InvalidInstance` naming the event index and field for a value of the wrong type,
    or a missing/invalid label when `with_labels`.
    """
    n = len(events)
    cat: dict[str, tuple[list, list]] = {}
    num: dict[str, tuple[list, list]] = {}
    labels = np.zeros(n, np.float32) if with_labels else None
    weights = None
    for i, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise InvalidInstance(f"instance {i}: expected an object, got {type(event).__name__}")
        if with_labels:
            labels[i], w = _label_and_weight(event, i)
            if w != 1.0:
                if weights is None:
                    weights = np.ones(n, np.float32)
                weights[i] = w
            feats = event.get("features")
        else:
            feats = event.get("features", event)
        if not isinstance(feats, Mapping):
            raise InvalidInstance(f"instance {i}: 'features' must be an object")
        for name, value in feats.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = str(value).lower()
            if isinstance(value, str):
                rows, vals = cat.setdefault(name, ([], []))
                rows.append(i)
                vals.append(value)
            elif isinstance(value, (int, float)):
                if value != value or value in (float("inf"), float("-inf")):
                    raise InvalidInstance(f"instance {i}: feature {name!r} is not finite")
                rows, vals = num.setdefault(name, ([], []))
                rows.append(i)
                vals.append(value)
            elif isinstance(value, list):
                if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
                    raise InvalidInstance(
                        f"instance {i}: feature {name!r} list must hold strings or integers")
                rows, vals = cat.setdefault(name, ([], []))
                rows.extend([i] * len(value))
                vals.extend(str(v) for v in value)
            else:
                raise InvalidInstance(
                    f"instance {i}: feature {name!r} has unsupported type {type(value).__name__}")
    for name in cat.keys() & num.keys():
        raise InvalidInstance(f"feature {name!r} is numeric in some events and not in others")
    columns = _columns(CATEGORICAL, cat, str)
    columns.update(_columns(NUMERIC, num, np.float64))
    return Batch(n, columns, labels, weights)


def _columns(kind: str, fields: dict[str, tuple[list, list]], dtype) -> dict[str, Column]:
    """Columns from per-field (rows, values) lists, with one array per kind rather than two
    per field: a request of one instance with 40 fields costs 4 array builds, not 80."""
    if not fields:
        return {}
    sizes = [len(rows) for rows, _ in fields.values()]
    rows = np.fromiter(itertools.chain.from_iterable(r for r, _ in fields.values()), np.int64,
                       sum(sizes))
    values = np.array(list(itertools.chain.from_iterable(v for _, v in fields.values())),
                      dtype=dtype)
    return {name: Column(kind, r, v) for name, r, v in
            zip(fields, _pieces(rows, sizes), _pieces(values, sizes))}


def _label_and_weight(event: Mapping, i: int) -> tuple[float, float]:
    label = event.get("label")
    if isinstance(label, bool):
        label = int(label)
    if label not in (0, 1, -1):
        raise InvalidInstance(f"event {i}: label must be 0 or 1 (or -1), got {label!r}")
    weight = event.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
        raise InvalidInstance(f"event {i}: weight must be a finite number >= 0, got {weight!r}")
    return (1.0 if label == 1 else 0.0), float(weight)


def concat_batches(batches: Iterable[Batch]) -> Batch:
    """Join batches end to end (used by sources that read in chunks)."""
    batches = list(batches)
    n = 0
    cols: dict[str, list[Column]] = {}
    for b in batches:
        for name, c in b.columns.items():
            cols.setdefault(name, []).append(Column(c.kind, c.rows + n, c.values))
        n += b.n
    merged = {name: Column(parts[0].kind, np.concatenate([p.rows for p in parts]),
                           np.concatenate([p.values for p in parts])) for name, parts in cols.items()}
    labels = (np.concatenate([b.labels for b in batches])
              if batches and all(b.labels is not None for b in batches) else None)
    weights = None
    if any(b.weights is not None for b in batches):
        weights = np.concatenate([b.weights if b.weights is not None else np.ones(b.n, np.float32)
                                  for b in batches])
    return Batch(n, merged, labels, weights)
