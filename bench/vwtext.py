"""Batches -> Vowpal Wabbit text, featurized the way a deltaps model featurizes them.

Why: a quality comparison is only fair if both learners see the same information. So the
model's own `FeatureSpec` decides what VW gets: the same fields, numeric values replaced by
the bucket of the same `common.features.Transform` (default log2), one feature per value of a
multi-valued field, and each cross written out as explicit pair features (``user_x_genres=
196^Comedy``), per event exactly the combinations `common.features.cross_ids` hashes. Both
sides then differ only in the hash function (and so in which features collide), and VW keeps
its constant feature as deltaps keeps its bias.

A line is ``label [weight] |f field=value ...`` with label 1/-1. Text is built with whole-array
numpy string operations a chunk at a time; it is not part of any timing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from common.features import NUMERIC, Batch, Column, Featurizer, FeatureSpec, Transform

_DEFAULT = Transform("log2")
_UNSAFE = (" ", "\t", "|", ":", "\n", "\r")  # separators in VW text; replaced by "_"


def value_strings(name: str, col: Column, spec: FeatureSpec) -> np.ndarray:
    """What deltaps hashes for each value of a column, as text: the bucket of a numeric value,
    the id of an integer categorical, the (sanitized) string of a string categorical."""
    if col.kind == NUMERIC:
        return spec.transforms.get(name, _DEFAULT).bucketize(col.values).astype(str)
    values = col.values
    if values.dtype.kind in "iu":
        return values.astype(str)
    text = values.astype(str)
    for ch in _UNSAFE:
        text = np.strings.replace(text, ch, "_")
    return text


def cross_pairs(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Every per-event combination of one value of each part, joined by "^".

    The same repeat/cumsum expansion as `common.features.cross_ids`, on strings instead of ids.
    """
    rows, text = parts[0]
    for rows_b, text_b in parts[1:]:
        if rows.size == 0 or rows_b.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, dtype=str)
        n = int(max(rows.max(), rows_b.max())) + 1
        count_b = np.bincount(rows_b, minlength=n)
        start_b = np.concatenate(([0], np.cumsum(count_b)[:-1]))
        reps = count_b[rows]
        a_idx = np.repeat(np.arange(rows.size), reps)
        offset = np.arange(a_idx.size) - np.repeat(np.cumsum(reps) - reps, reps)
        b_idx = start_b[rows[a_idx]] + offset
        rows = rows[a_idx]
        text = np.strings.add(np.strings.add(text[a_idx], "^"), text_b[b_idx])
    return rows, text


def feature_tokens(batch: Batch, spec: FeatureSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, " name=value" tokens) per field and per cross, as the model's spec selects them."""
    wanted = list(spec.fields) or list(batch.columns)
    needed = wanted + [f for cross in spec.crosses for f in cross if f not in wanted]
    values = {name: (batch.columns[name].rows, value_strings(name, batch.columns[name], spec))
              for name in dict.fromkeys(needed) if name in batch.columns}
    out = []
    for name in wanted:
        if name in values:
            rows, text = values[name]
            out.append((rows, np.strings.add(f" {name}=", text)))
    for cross in spec.crosses:
        if all(f in values for f in cross):
            rows, text = cross_pairs([values[f] for f in cross])
            out.append((rows, np.strings.add(" " + "_x_".join(cross) + "=", text)))
    return out


def batch_text(batch: Batch, spec: FeatureSpec) -> str:
    """VW text lines of a batch (each ending in a newline), events in their order."""
    labels = np.where(batch.labels > 0, "1", "-1")
    head = np.strings.add("\n", labels)
    if batch.weights is not None:
        head = np.strings.add(np.strings.add(head, " "), batch.weights.astype(str))
    head = np.strings.add(head, " |f")
    parts = [(np.arange(batch.n, dtype=np.int64), head)] + feature_tokens(batch, spec)
    # Sort key 2*row for a line's head, 2*row+1 for its features: one stable sort orders all.
    keys = np.concatenate([2 * rows + (i > 0) for i, (rows, _t) in enumerate(parts)])
    tokens = np.concatenate([t.astype(object) for _r, t in parts])
    return "".join(tokens[np.argsort(keys, kind="stable")].tolist())[1:] + "\n"


def check_same_features(batch: Batch, spec: FeatureSpec) -> None:
    """Raise unless VW text gives every event as many features as `Featurizer` gives it (bias
    aside) and the batch as many distinct features as distinct ids: the claim above, checked."""
    tokens = feature_tokens(batch, spec)
    ours = Featurizer(spec).featurize(batch)
    per_event = sum((np.bincount(r, minlength=batch.n) for r, _t in tokens),
                    np.zeros(batch.n, np.int64))
    bias = 1 if spec.bias else 0
    expected = np.bincount(ours.rows, minlength=batch.n) - bias
    distinct = len(np.unique(np.concatenate([t for _r, t in tokens]))) if tokens else 0
    if not np.array_equal(per_event, expected) or distinct != len(np.unique(ours.ids)) - bias:
        raise AssertionError("VW text and deltaps featurize this batch differently")


def write_vw(batches: Iterable[Batch], spec: FeatureSpec, path: str | Path
             ) -> tuple[int, np.ndarray]:
    """Write batches as one VW text file; returns (events, labels as 0/1 float32).
    The first batch is checked against `Featurizer` (check_same_features)."""
    labels = []
    with open(path, "w", encoding="utf-8") as out:
        for batch in batches:
            if batch.n:
                if not labels:
                    check_same_features(batch, spec)
                out.write(batch_text(batch, spec))
                labels.append(np.asarray(batch.labels, np.float32))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.float32)
    return int(labels.size), labels
