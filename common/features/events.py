"""Event dicts (JSON lines, predict instances) -> columnar `Batch`, checking every value.

An event is ``{"label": 0|1, "features": {field: value}, "weight": w?}`` where a value is a
string (categorical), a number (numeric: discretized by the field's transform), or a list of
strings/integers (multi-valued categorical). Predict instances may also be the features dict
itself. Why one module for this: training files and predict requests go through the same
`columnarize`, so a value means the same thing to the worker that learns from it and the
replica that scores it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.errors import InvalidInstance
from common.features.batch import CATEGORICAL, NUMERIC, Batch, Column, pieces


@dataclass
class Flat:
    """Every value of a list of event dicts, read in one pass (what `columnarize` builds
    columns from).

    Why flat first: one Python pass appends each value to a few lists, with no per-field
    bookkeeping; grouping the entries by field is then a handful of numpy calls. Entry k of a
    kind is field ``names[codes[k]]`` of event ``rows[k]``; entries are in event order, and codes
    number fields in the order they were first seen. Strings (and list items) are categorical,
    numbers numeric.
    """

    n: int
    names: list[str]
    cat: tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, codes, values (str)
    num: tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, codes, values (float64)
    numeric: list[bool]  # per code: whether the field's values are numbers
    labels: np.ndarray | None = None
    weights: np.ndarray | None = None


def columnarize(events: Sequence[Mapping], *, with_labels: bool) -> Batch:
    """Build a `Batch` from event dicts (JSON lines, predict instances).

    Columns come categorical fields first, then numeric ones, each kind in first-seen order;
    each column's entries are in event order. Raises `InvalidInstance` naming the event index
    and field for a value of the wrong type, or a missing/invalid label when `with_labels`.
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
    counts = np.bincount(codes).tolist()  # entries per field code
    if rows.size > 1 and bool((codes[1:] < codes[:-1]).any()):
        order = np.argsort(codes, kind="stable")
        rows, values = rows[order], values[order]
    fields = [c for c, size in enumerate(counts) if size]
    sizes = [counts[c] for c in fields]
    return {names[c]: Column(kind, r, v) for c, r, v in
            zip(fields, pieces(rows, sizes), pieces(values, sizes))}


def flatten(events: Sequence[Mapping], *, with_labels: bool) -> Flat:
    """Read event dicts into a `Flat`, checking every value.

    Raises `InvalidInstance` naming the event index and field for a value of the wrong type,
    or a missing/invalid label when `with_labels`. The loop does a few list appends per value
    and no per-field bookkeeping: it is the only per-value Python work of featurizing dicts.
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
