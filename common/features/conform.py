"""Make a batch's columns the kinds a model's schema declares, before featurizing.

Why: an event dict says a value's kind only by its JSON type, and `196` is a number whatever
the field means. A model whose source declared `user` an integer id ("id") learned the ids of
an integer column; a predict request's `{"user": 196}` must get those ids, not a log2 bucket
of 196. Conforming turns the column into what the source gave (here: categorical int64), so
the featurizer then takes the very path it took in training. Whole columns at a time, with
numpy; a column already of the declared kind is passed through untouched.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common.errors import InvalidInstance
from common.features.batch import CATEGORICAL, NUMERIC, Batch, Column


def conform(batch: Batch, schema: Mapping[str, str]) -> Batch:
    """`batch` with each column of a field in `schema` converted to its declared kind: "num"
    (numeric float64), "cat" (categorical; numbers become their decimal text) or "id"
    (categorical int64). Raises `InvalidInstance` naming the field and a value that cannot be
    that kind (a fractional id, a word for an amount); nothing is converted half-way, since
    the batch is left as it was."""
    if not schema:
        return batch
    if batch.entries is not None and not any(
            _changes(kind, schema.get(name))
            for name, kind in zip(batch.entries.names, batch.entries.kinds)):
        return batch  # nothing to convert: its columns need not be made (`Batch.entries`)
    changed = {}
    for name, col in batch.columns.items():
        kind = schema.get(name)
        if kind is not None:
            new = _conform(name, col, kind)
            if new is not col:
                changed[name] = new
    if not changed:
        return batch
    return Batch(batch.n, {**batch.columns, **changed}, batch.labels, batch.weights)


def _changes(kind: str, declared: str | None) -> bool:
    """Whether `_conform` converts a column of `kind` whose values are what readers give (a
    categorical column's integers or string hashes, a numeric one's floats) to `declared`."""
    return declared is not None and (declared == "num") != (kind == NUMERIC)


def _conform(name: str, col: Column, kind: str) -> Column:
    values = col.values
    if kind == "num":
        if col.kind == NUMERIC:
            return col
        numbers = _parsed(name, values, np.float64, "a number")
        bad = ~np.isfinite(numbers)
        if bad.any():
            raise InvalidInstance(f"feature {name!r} is a number in this model's schema, got "
                                  f"{values[bad][0]!r}")
        return Column(NUMERIC, col.rows, numbers)
    if kind == "id":
        if col.kind == CATEGORICAL and values.dtype.kind in "iu":
            return col
        if col.kind == NUMERIC:
            ints = np.rint(values)
            bad = ints != values
            if bad.any():
                raise InvalidInstance(f"feature {name!r} is an integer id in this model's "
                                      f"schema, got {float(values[bad][0])!r}")
            return Column(CATEGORICAL, col.rows, ints.astype(np.int64))
        return Column(CATEGORICAL, col.rows, _parsed(name, values, np.int64, "an integer id"))
    if col.kind == CATEGORICAL:  # "cat": strings, or integers a reader already made of them
        return col
    ints = np.rint(values)
    text = np.where(ints == values, ints.astype(np.int64).astype(str), values.astype(str))
    return Column(CATEGORICAL, col.rows, text)


def _parsed(name: str, values: np.ndarray, dtype, what: str) -> np.ndarray:
    """String values parsed as `dtype` in one numpy pass; on failure, the first bad value is
    found and named (the only per-value work, on the error path)."""
    try:
        return values.astype(dtype)
    except (ValueError, OverflowError):
        for v in values.tolist():
            try:
                np.array([v]).astype(dtype)
            except (ValueError, OverflowError):
                raise InvalidInstance(f"feature {name!r} is {what} in this model's schema, "
                                      f"got {v!r}") from None
        raise
