"""Percentile discretizer: bucket boundaries for numeric fields from a calibration prefix.

Why: a deep model's features are ids (`common.deep`), so a number reaches it as the id of its
bucket, and the default log2 buckets put most of a field's events into one or two buckets when
its values are not spread over many powers of two (ages, ratings, prices in a narrow band).
Percentile boundaries give every bucket about the same share of the events, so each bucket's
row is learned from as many events as the others (DeepBird's discretizer does this for its
continuous features).

The boundaries are computed once, from a prefix of the stream, and then written into the spec as
a `kind = "buckets"` transform (`deltaps calibrate` prints the TOML): workers and replicas read
the same spec, so they bucket every value alike, and a later worker does not recompute
boundaries that the rows already learned would no longer match.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

import numpy as np

from common.features.batch import NUMERIC

MAX_BUCKETS = 1 << 16


def percentile_boundaries(values: np.ndarray, buckets: int) -> np.ndarray:
    """Sorted, distinct boundaries that cut the finite `values` into at most `buckets` groups
    of about equal size, for `Transform("buckets", boundaries)` (a value goes to the index of
    the first boundary above it). A value that holds more than one bucket's share is not split:
    its boundaries coincide and are kept once, so fewer buckets come out. Non-finite values are
    not counted; raises ValueError when none is left or `buckets` is out of range."""
    if not 2 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be between 2 and {MAX_BUCKETS}, not {buckets}")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no finite values to calibrate boundaries from")
    x.sort()
    # the value at each rank k * n / buckets starts bucket k: everything below it is before
    ranks = (np.arange(1, buckets) * x.size) // buckets
    cuts = np.unique(x[ranks])
    return cuts[cuts > x[0]]  # a boundary at the minimum would leave bucket 0 empty


def calibrate(batches: Iterable, buckets: int, fields: Sequence[str] = (),
              events: int | None = None) -> dict[str, list[float]]:
    """Per numeric field, `percentile_boundaries` of its values in the first `events` events
    of `batches` (each a `common.features.Batch`; all of them if None). `fields` limits the
    fields (default: every numeric field seen); a field asked for that has no numeric value
    in the prefix is an error naming it."""
    seen: dict[str, list[np.ndarray]] = {}
    count = 0
    for batch in batches:
        n = batch.n if events is None else min(batch.n, events - count)
        for name, col in batch.columns.items():
            if col.kind != NUMERIC or (fields and name not in fields):
                continue
            keep = col.rows < n
            seen.setdefault(name, []).append(col.values[keep] if not keep.all() else col.values)
        count += n
        if events is not None and count >= events:
            break
    missing = [f for f in fields if f not in seen]
    if missing:
        raise ValueError(f"field(s) {missing} have no numeric values in the first {count} "
                         "events")
    out = {}
    for name, parts in sorted(seen.items()):
        try:
            out[name] = percentile_boundaries(np.concatenate(parts), buckets).tolist()
        except ValueError as exc:
            raise ValueError(f"field {name!r}: {exc}") from None
    return out


def transforms_toml(boundaries: dict[str, list[float]]) -> str:
    """The spec's `[transforms.FIELD]` tables giving these boundaries (`kind = "buckets"`)."""
    lines = []
    for name, cuts in boundaries.items():
        key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
        lines += [f"[transforms.{key}]", 'kind = "buckets"',
                  "boundaries = [" + ", ".join(repr(float(c)) for c in cuts) + "]", ""]
    return "\n".join(lines)
