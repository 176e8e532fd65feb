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
import math
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from common.errors import InvalidInstance
from common.hashing import combine, hash_ints, hash_string, hash_strings
from common.unique import sorted_unique

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

    def to_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, ids): event i's ids are ``ids[offsets[i]:offsets[i + 1]]``, in the order
        they have here: the form pre-hashed reads travel in (`PredictIds`). Rows must lie in
        [0, n)."""
        offsets = np.zeros(self.n + 1, np.int64)
        np.cumsum(np.bincount(self.rows, minlength=self.n), out=offsets[1:])
        return offsets, self.ids[np.argsort(self.rows, kind="stable")]


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
    values and numeric buckets of every column go through one splitmix64 pass together, and
    every string through one string-hashing pass.
    """

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self._field_seed: dict[str, np.uint64] = {}
        self._default_transform = Transform("log2")
        self._facts: dict[str, tuple[int, int, int]] = {}  # per field name: see _field_facts
        self._transforms: dict[tuple, Transform] = {}

    def field_seed(self, name: str) -> np.uint64:
        seed = self._field_seed.get(name)
        if seed is None:
            seed = self._field_seed[name] = np.uint64(hash_string(name))
        return seed

    def featurize(self, batch: Batch) -> Features:
        """Features of a columnar batch, written straight into their output arrays.

        Fields come out in order (the spec's fields, or the batch's columns), each field's
        entries in event order, then crosses, then the bias. Numeric columns sharing a
        transform are bucketized in one call, every integer value (ids and buckets) of every
        column is hashed in one pass and every string in another, so the numpy calls per batch
        barely grow with the number of fields (what keeps a one-event batch cheap), and no
        value is copied more than it must be (what keeps a large one cheap).
        """
        wanted = list(self.spec.fields or batch.columns)
        crossed = sorted({f for cross in self.spec.crosses for f in cross} - set(wanted))
        columns = batch.columns
        order = [name for name in wanted + crossed
                 if name in columns and columns[name].rows.size]
        sizes = [columns[name].rows.size for name in order]
        ends = list(itertools.accumulate(sizes))
        spans = [slice(end - size, end) for size, end in zip(sizes, ends)]  # field k's entries
        total = ends[-1] if ends else 0
        bias = batch.n if self.spec.bias else 0
        rows = np.empty(total + bias, np.int64)
        words = np.empty(total + bias, np.int64)  # what each entry hashes: int value or bucket
        strings: list[int] = []
        numeric: dict[tuple, list[int]] = {}
        for k, name in enumerate(order):
            col = columns[name]
            rows[spans[k]] = col.rows
            if col.kind == NUMERIC:
                t = self.spec.transforms.get(name, self._default_transform)
                numeric.setdefault((t.kind, tuple(t.boundaries)), []).append(k)
            elif col.values.dtype.kind in "iu":
                words[spans[k]] = col.values
            else:
                strings.append(k)
        for (kind, boundaries), group in numeric.items():
            values = [columns[order[k]].values for k in group]
            buckets = Transform(kind, boundaries).bucketize(
                values[0] if len(values) == 1 else np.concatenate(values))
            for k, part in zip(group, _pieces(buckets, [sizes[k] for k in group])):
                words[spans[k]] = part
        seeds = np.repeat(np.array([self.field_seed(n) for n in order] + [0], np.uint64),
                          sizes + [bias])
        ids = hash_ints(words, seeds)  # string entries' slots are overwritten below
        if strings:
            values = [columns[order[k]].values for k in strings]
            hashed = hash_strings(values[0] if len(values) == 1 else np.concatenate(values),
                                  np.concatenate([seeds[spans[k]] for k in strings]))
            for k, part in zip(strings, _pieces(hashed, [sizes[k] for k in strings])):
                ids[spans[k]] = part
        if bias:
            rows[total:] = np.arange(batch.n)
            ids[total:] = BIAS_ID
        n_plain = sum(name not in crossed for name in order)
        plain = ends[n_plain - 1] if n_plain else 0
        if plain == total and not self.spec.crosses:
            return Features(batch.n, rows, ids)
        parts_rows, parts_ids = [rows[:plain]], [ids[:plain]]
        span_of = dict(zip(order, spans))
        for cross in self.spec.crosses:
            r, i = cross_ids([(rows[span_of[f]], ids[span_of[f]]) if f in span_of else None
                              for f in cross])
            parts_rows.append(r)
            parts_ids.append(i)
        parts_rows.append(rows[total:])
        parts_ids.append(ids[total:])
        return Features(batch.n, np.concatenate(parts_rows), np.concatenate(parts_ids))

    def featurize_events(self, events: Sequence[Mapping]) -> Features:
        """`featurize(columnarize(events))` without building columns: the same ids in the same
        order, from one `flatten` pass and a fixed number of numpy calls however many fields
        an event has (what keeps a one-instance predict cheap)."""
        return self.featurize_flat(flatten(events, with_labels=False))

    def featurize_flat(self, flat: Flat) -> Features:
        layout = self._layout(flat)
        rows, codes, ids = self._flat_ids(flat, layout)
        ranks = layout.rank[codes]
        order = np.argsort(ranks, kind="stable")  # field by field, events in order
        rows, ids, ranks = rows[order], ids[order], ranks[order]
        plain = int(np.searchsorted(ranks, layout.plain_below))
        parts_rows, parts_ids = [rows[:plain]], [ids[:plain]]
        if self.spec.crosses:
            code_of = {name: code for code, name in enumerate(flat.names)}

            def field(name):
                if name not in code_of:
                    return None
                r = layout.rank[code_of[name]]
                lo, hi = np.searchsorted(ranks, [r, r + 1]).tolist()
                return (rows[lo:hi], ids[lo:hi]) if hi > lo else None
            for cross in self.spec.crosses:
                r, i = cross_ids([field(f) for f in cross])
                parts_rows.append(r)
                parts_ids.append(i)
        if self.spec.bias:
            parts_rows.append(np.arange(flat.n, dtype=np.int64))
            parts_ids.append(np.full(flat.n, BIAS_ID, dtype=np.uint64))
        return Features(flat.n, np.concatenate(parts_rows), np.concatenate(parts_ids))

    def _layout(self, flat: Flat) -> "_Layout":
        """Per field code of this request: seed, output rank, transform (from per-name facts
        computed once per field name)."""
        facts = [self._facts.get(name) or self._field_facts(name) for name in flat.names]
        n = len(facts)
        if self.spec.fields:
            rank = np.array([f[1] for f in facts] or [0], np.int64)
            plain_below = len(self.spec.fields)
        else:  # every field, categorical ones first, each kind in first-seen order
            rank = np.arange(max(n, 1), dtype=np.int64)
            rank[:n] += n * np.array(flat.numeric, dtype=np.int64)
            plain_below = 2 * n
        used = rank < UNUSED
        if rank.size and int(rank.max(initial=0)) < np.iinfo(np.int16).max:
            rank = rank.astype(np.int16)  # numpy's stable sort is a radix sort for 16 bits
        return _Layout(rank, plain_below, used, bool(used.all()),
                       np.array([f[0] for f in facts] or [0], np.uint64),
                       np.array([f[2] for f in facts] or [0], np.int64))

    def _field_facts(self, name: str) -> tuple[int, int, int]:
        """(seed, rank when the spec lists fields, index of its transform in `_transforms`)."""
        spec = self.spec
        if name in spec.fields:
            rank = list(spec.fields).index(name)
        else:
            crossed = sorted({f for c in spec.crosses for f in c} - set(spec.fields))
            rank = len(spec.fields) + crossed.index(name) if name in crossed else UNUSED
        t = spec.transforms.get(name, self._default_transform)
        key = (t.kind, tuple(t.boundaries))
        if key not in self._transforms:
            self._transforms[key] = Transform(t.kind, tuple(t.boundaries))
        facts = (int(self.field_seed(name)), rank, list(self._transforms).index(key))
        self._facts[name] = facts
        return facts

    def _flat_ids(self, flat: Flat, layout: "_Layout") -> tuple[np.ndarray, ...]:
        """(rows, codes, ids) of the entries of used fields: numbers bucketized by their
        field's transform, then every value hashed with its field's seed."""
        parts = []
        for (rows, codes, values), numeric in ((flat.cat, False), (flat.num, True)):
            if rows.size == 0:
                continue
            if not layout.all_used:
                keep = layout.used[codes]
                rows, codes, values = rows[keep], codes[keep], values[keep]
            if numeric:
                ids = hash_ints(self._bucketize(layout.transform[codes], values),
                                layout.seeds[codes])
            else:
                ids = hash_strings(values, layout.seeds[codes])
            parts.append((rows, codes, ids))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64)
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(a) for a in zip(*parts))

    def _bucketize(self, which: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Numeric values bucketized by their field's transform (one call per transform)."""
        first = int(which[0]) if which.size else 0
        transforms = list(self._transforms.values())
        if which.size == 0 or bool((which == first).all()):
            return transforms[first].bucketize(values)
        buckets = np.empty(values.size, np.int64)
        for k in sorted_unique(which).tolist():
            mask = which == k
            buckets[mask] = transforms[k].bucketize(values[mask])
        return buckets


UNUSED = 1 << 40  # rank of a field the spec does not use


@dataclass
class _Layout:
    """Per field code of one request: output rank, seed and transform."""

    rank: np.ndarray
    plain_below: int  # entries ranked below this are plain features (the rest only crossed)
    used: np.ndarray
    all_used: bool
    seeds: np.ndarray  # uint64
    transform: np.ndarray  # index into Featurizer._transforms

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


@dataclass
class Flat:
    """Every value of a list of event dicts, read in one pass (what `columnarize` and
    `Featurizer.featurize_events` both start from).

    Entry k of a kind is field ``names[codes[k]]`` of event ``rows[k]``; entries are in event
    order, and codes number fields in the order they were first seen. Strings (and list items)
    are categorical, numbers numeric.
    """

    n: int
    names: list[str]
    cat: tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, codes, values (str)
    num: tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, codes, values (float64)
    numeric: list[bool]  # per code: whether the field's values are numbers
    labels: np.ndarray | None = None
    weights: np.ndarray | None = None


def flatten(events: Sequence[Mapping], *, with_labels: bool) -> Flat:
    """Read event dicts into a `Flat`, checking every value.

    Raises `InvalidInstance` naming the event index and field for a value of the wrong type,
    or a missing/invalid label when `with_labels`. The loop does a few list appends per value
    and no per-field bookkeeping: a predict request of one instance with 40 fields costs ~30 us.
    """
    n = len(events)
    codes: dict[str, int] = {}
    numeric: list[bool] = []
    cat_rows, cat_codes, cat_values = [], [], []
    num_rows, num_codes, num_values = [], [], []
    labels = np.zeros(n, np.float32) if with_labels else None
    weights = None
    for i, event in enumerate(events):
        if type(event) is not dict and not isinstance(event, Mapping):
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
        if type(feats) is not dict and not isinstance(feats, Mapping):
            raise InvalidInstance(f"instance {i}: 'features' must be an object")
        for name, value in feats.items():
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):
                    raise InvalidInstance(f"instance {i}: feature {name!r} is not finite")
            elif kind is not int and kind is not str:
                if value is None:
                    continue
                value = _odd_value(value, name, i)
                if isinstance(value, list):
                    code = codes.get(name)
                    if code is None:
                        code = codes[name] = len(codes)
                        numeric.append(False)
                    cat_rows.extend([i] * len(value))
                    cat_codes.extend([code] * len(value))
                    cat_values.extend(value)
                    continue
                kind = type(value)
            code = codes.get(name)
            if code is None:
                code = codes[name] = len(codes)
                numeric.append(kind is not str)
            if kind is str:
                cat_rows.append(i)
                cat_codes.append(code)
                cat_values.append(value)
            else:
                num_rows.append(i)
                num_codes.append(code)
                num_values.append(value)
    names = list(codes)
    cat = (_ints(cat_rows), _ints(cat_codes), np.array(cat_values, dtype=str))
    num = (_ints(num_rows), _ints(num_codes),
           np.fromiter(num_values, np.float64, len(num_values)))
    is_numeric = np.array(numeric, bool)
    mixed = np.concatenate([cat[1][is_numeric[cat[1]]], num[1][~is_numeric[num[1]]]])
    if mixed.size:
        raise InvalidInstance(f"feature {names[int(mixed.min())]!r} is numeric in some events "
                              "and not in others")
    return Flat(n, names, cat, num, numeric, labels, weights)


def _ints(values: list[int]) -> np.ndarray:
    return np.fromiter(values, np.int64, len(values))


def _odd_value(value, name: str, i: int):
    """A value other than a plain str/int/float: booleans become "true"/"false", subclasses
    of str/int/float count as their base type, a list becomes a list of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        value = float(value) if isinstance(value, float) else int(value)
        if not math.isfinite(value):
            raise InvalidInstance(f"instance {i}: feature {name!r} is not finite")
        return value
    if isinstance(value, list):
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise InvalidInstance(
                f"instance {i}: feature {name!r} list must hold strings or integers")
        return [str(v) for v in value]
    raise InvalidInstance(
        f"instance {i}: feature {name!r} has unsupported type {type(value).__name__}")


def columnarize(events: Sequence[Mapping], *, with_labels: bool) -> Batch:
    """Build a `Batch` from event dicts (JSON lines, predict instances).

    Raises `InvalidInstance` naming the event index and field for a value of the wrong type,
    or a missing/invalid label when `with_labels`.
    """
    flat = flatten(events, with_labels=with_labels)
    columns = _columns(CATEGORICAL, flat.names, *flat.cat)
    columns.update(_columns(NUMERIC, flat.names, *flat.num))
    return Batch(flat.n, columns, flat.labels, flat.weights)


def _columns(kind: str, names: list[str], rows: np.ndarray, codes: np.ndarray,
             values: np.ndarray) -> dict[str, Column]:
    """One column per field, in first-seen order: a stable sort of the entries by field keeps
    each field's entries in event order."""
    if rows.size == 0:
        return {}
    order = np.argsort(codes, kind="stable")
    fields, starts = np.unique(codes[order], return_index=True)
    sizes = np.diff(np.append(starts, rows.size)).tolist()
    return {names[c]: Column(kind, r, v) for c, r, v in
            zip(fields.tolist(), _pieces(rows[order], sizes), _pieces(values[order], sizes))}


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
