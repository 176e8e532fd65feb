"""A block of JSON lines parsed by pyarrow.json into a `Batch`, when the block is clean.

Why: parsing JSON in C++ is several times faster than `json.loads` per line followed by a
Python pass over every value. pyarrow refuses a whole block for one bad line (invalid JSON, a
field that changes type), and some valid events have shapes this path does not take (nested
objects, lists of numbers); then `to_batch` returns None and the caller parses the block line
by line, where each bad line is found, reported and skipped.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from common.features import CATEGORICAL, NUMERIC, Batch, Column
from worker.sources.arrow_columns import hashes_of, single

_PARSE = pajson.ParseOptions(unexpected_field_behavior="infer", newlines_in_values=False)


def to_batch(block: bytes) -> Batch | None:
    """The events of a block of whole lines, or None if it must be parsed line by line."""
    try:
        table = pajson.read_json(pa.py_buffer(block), pajson.ReadOptions(
            use_threads=False, block_size=len(block) + 1), _PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    n = table.num_rows
    names = set(table.column_names)
    if n == 0 or "label" not in names or "features" not in names or names - {
            "label", "features", "weight"}:
        return None
    labels = _labels(single(table.column("label")))
    features = single(table.column("features"))
    if labels is None or features.null_count or not pa.types.is_struct(features.type):
        return None
    weights = None
    if "weight" in names:
        weights = _weights(single(table.column("weight")))
        if weights is None:
            return None
    cat, num = {}, {}
    for k in range(features.type.num_fields):
        name = features.type.field(k).name
        col = _column(features.field(k))
        if col is False:
            return None
        if col is not None:
            (num if col.kind == NUMERIC else cat)[name] = col
    return Batch(n, {**cat, **num}, labels, weights)


def _labels(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count:
        return None
    if pa.types.is_boolean(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(np.float32)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return None
    values = arr.to_numpy(zero_copy_only=False)
    if not np.isin(values, (0, 1, -1)).all():
        return None
    return (values == 1).astype(np.float32)


def _weights(arr: pa.Array) -> np.ndarray | None:
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or
            pa.types.is_null(arr.type)):
        return None
    values = np.asarray(pc.fill_null(arr, 1.0).to_numpy(zero_copy_only=False), np.float64) \
        if not pa.types.is_null(arr.type) else np.ones(len(arr))
    if not (np.isfinite(values) & (values >= 0)).all():
        return None
    return values.astype(np.float32)


def _column(arr: pa.Array):
    """A Column of one feature field; None if it is always null; False if this path cannot
    take it (the block is then parsed line by line)."""
    t = arr.type
    if pa.types.is_null(t) or len(arr) == arr.null_count:
        return None
    present = (np.ones(len(arr), bool) if arr.null_count == 0
               else pc.is_valid(arr).to_numpy(zero_copy_only=False))
    rows = np.flatnonzero(present)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        values = np.asarray(arr.to_numpy(zero_copy_only=False), np.float64)[rows]
        return Column(NUMERIC, rows, values) if np.isfinite(values).all() else False
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return Column(CATEGORICAL, rows, hashes_of(arr, rows))  # hashed in Arrow's buffers
    if pa.types.is_boolean(t):
        flags = arr.to_numpy(zero_copy_only=False)[rows].astype(bool)
        return Column(CATEGORICAL, rows, np.where(flags, "true", "false"))
    if pa.types.is_list(t) and (pa.types.is_string(t.value_type) or
                                pa.types.is_integer(t.value_type)):
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), np.int64)
        counts = np.diff(offsets) * present
        items = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        if items.null_count:
            return False
        keep = np.repeat(present, np.diff(offsets))
        if pa.types.is_string(t.value_type):
            values = hashes_of(items, np.flatnonzero(keep))
        else:
            values = items.to_numpy(zero_copy_only=False)[keep].astype(str)
        return Column(CATEGORICAL, np.repeat(np.arange(len(arr)), counts), values)
    return False
