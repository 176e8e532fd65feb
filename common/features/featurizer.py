"""The featurizer: a columnar `Batch` -> 64-bit feature ids, the same code in workers and
serving replicas.

There is one featurization path: event dicts are first turned into a `Batch` (`columnarize`),
so a predict request and a training batch go through the very same `Featurizer.featurize` and
get the very same ids for the same event.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from common.features.batch import NUMERIC, Batch, Features, pieces
from common.features.crosses import cross_ids
from common.features.entries import DROP, KEEP, LOG2, ROUND, Entries
from common.features.events import columnarize
from common.features.spec import FeatureSpec, Transform
from common.hashing import hash_string, hash_strings, splitmix64

BIAS_ID = hash_string("\x00bias")


def mix_fields(words: np.ndarray, seeds: np.ndarray, ends: np.ndarray, ids: np.ndarray) -> None:
    """``ids[e] = splitmix64(words[e] ^ seeds[k])`` for the entries e of field k, which end at
    `ends[k]`: each value and its field become one id."""
    ids[:] = splitmix64(words ^ np.repeat(seeds, np.diff(ends, prepend=0)))


class Featurizer:
    """Turns a `Batch` into `Features` for one `FeatureSpec`; pure and vectorized.

    A feature's id is its value hashed with the hash of its field's name as seed. A string is
    first hashed on its own (`hash_strings`, one pass over every string of the batch), which
    lets a reader hash strings where they lie in its buffers (`worker.sources.delimited_scan`)
    and hand over the hashes as integer values; then integer values, numeric buckets and
    string hashes of every column go through one splitmix64 pass together. Why one object per spec: what depends only
    on a field's name (its seed, its transform) is computed once and reused by every batch.
    """

    def __init__(self, spec: FeatureSpec, mixer: Callable | None = None,
                 entries_mixer: Callable | None = None):
        """`mixer(words, seeds, ends, ids)` writes the ids of entries whose field k ends at
        `ends[k]`, ``splitmix64(word ^ seeds[k])``, into `ids`; the worker passes its
        compiled one (`worker.models.kernel.mix_fields`), replicas keep numpy's
        (`mix_fields`). `entries_mixer(entries, codes, seeds, bias, with_bias)` makes the
        `Features` of a batch read event by event (`common.features.entries`), keeping that
        order, as `worker.models.prebuilt.Kernel.mix_entries` does; without one, such a
        batch is featurized from its columns."""
        self.spec = spec
        self._mix = mixer or mix_fields
        self._mix_entries = entries_mixer
        self._entry_plans: dict[tuple, tuple | None] = {}  # per (names, kinds) of entries
        self._field_seed: dict[str, np.uint64] = {}
        self._default_transform = Transform("log2")
        self._transforms: dict[tuple, Transform] = {}  # one per distinct (kind, boundaries)
        self._transform_key: dict[str, tuple] = {}  # per field name: its key in _transforms
        crossed = {f for cross in spec.crosses for f in cross}
        self._plain = list(spec.fields)
        self._crossed_only = sorted(crossed - set(spec.fields)) if spec.fields else []

    def field_seed(self, name: str) -> np.uint64:
        seed = self._field_seed.get(name)
        if seed is None:
            seed = self._field_seed[name] = np.uint64(hash_string(name))
        return seed

    def featurize_events(self, events: Sequence[Mapping]) -> Features:
        """Features of event dicts (predict instances): ``featurize(columnarize(events))``.

        Raises `InvalidInstance` for a value of the wrong type, naming the instance and field.
        """
        return self.featurize(columnarize(events, with_labels=False))

    def featurize(self, batch: Batch) -> Features:
        """Features of a columnar batch, written straight into their output arrays.

        Fields come out in order (the spec's fields, or the batch's columns), each field's
        entries in event order, then crosses, then the bias; a batch read event by event keeps
        that order instead, each event's values then its bias (the same pairs of row and id,
        grouped by event: `Features.offsets`). Numeric columns sharing a
        transform are bucketized in one call, every integer value (ids and buckets) of every
        column is hashed in one pass and every string in another, so the numpy calls per batch
        barely grow with the number of fields (what keeps a one-event batch cheap), and no
        value is copied more than it must be (what keeps a large one cheap).
        """
        if batch.entries is not None and self._mix_entries is not None:
            plan = self._entry_plan(batch.entries)
            if plan is not None:
                return self._mix_entries(batch.entries, *plan, BIAS_ID, self.spec.bias)
        columns = batch.columns
        if self._plain:
            order = [name for name in self._plain + self._crossed_only
                     if name in columns and columns[name].rows.size]
            n_plain = sum(name not in self._crossed_only for name in order)
        else:  # every field of the batch; a crossed field not in it has no entries anyway
            order = [name for name, col in columns.items() if col.rows.size]
            n_plain = len(order)
        sizes = [columns[name].rows.size for name in order]
        ends = list(itertools.accumulate(sizes))
        spans = [slice(end - size, end) for size, end in zip(sizes, ends)]  # field k's entries
        total = ends[-1] if ends else 0
        bias = batch.n if self.spec.bias else 0
        rows = np.empty(total + bias, np.int64)
        words = np.empty(total, np.uint64)  # what each entry hashes (see the class)
        strings: list[int] = []
        numeric: dict[tuple, list[int]] = {}
        for k, name in enumerate(order):
            col = columns[name]
            rows[spans[k]] = col.rows
            if col.kind == NUMERIC:
                numeric.setdefault(self._transform_key.get(name) or self._key_of(name),
                                   []).append(k)
            elif col.values.dtype.kind in "iu":
                words[spans[k]] = col.values.astype(np.int64, copy=False).view(np.uint64) \
                    if col.values.dtype.kind == "i" else col.values
            else:
                strings.append(k)
        for key, group in numeric.items():
            values = [columns[order[k]].values for k in group]
            buckets = self._transforms[key].bucketize(
                values[0] if len(values) == 1 else np.concatenate(values))
            for k, part in zip(group, pieces(buckets, [sizes[k] for k in group])):
                words[spans[k]] = part
        if strings:
            values = [columns[order[k]].values for k in strings]
            hashed = hash_strings(values[0] if len(values) == 1 else np.concatenate(values))
            for k, part in zip(strings, pieces(hashed, [sizes[k] for k in strings])):
                words[spans[k]] = part
        ids = np.empty(total + bias, np.uint64)
        self._mix(words, np.array([self.field_seed(n) for n in order], np.uint64),
                  np.array(ends, np.int64), ids[:total])
        if bias:
            rows[total:] = np.arange(batch.n)
            ids[total:] = BIAS_ID
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

    def _entry_plan(self, entries: Entries) -> tuple[np.ndarray, np.ndarray] | None:
        """(code, seed) per field of a batch's entries: what `featurize` does with each field
        from its columns, as codes of `common.features.entries`; None where that takes more
        than one entry at a time (crosses, boundary buckets), which the columns then do."""
        key = (entries.names, entries.kinds)
        if key not in self._entry_plans:
            self._entry_plans[key] = self._plan_of(*key)
        return self._entry_plans[key]

    def _plan_of(self, names: tuple[str, ...], kinds: tuple[str, ...]):
        if self.spec.crosses:
            return None
        codes = []
        for name, kind in zip(names, kinds):
            if self._plain and name not in self._plain:
                codes.append(DROP)
            elif kind != NUMERIC:
                codes.append(KEEP)
            else:
                transform = self._transforms[self._transform_key.get(name) or self._key_of(name)]
                if transform.kind not in ("log2", "categorical"):
                    return None
                codes.append(LOG2 if transform.kind == "log2" else ROUND)
        return (np.array(codes, np.int64),
                np.array([self.field_seed(name) for name in names], np.uint64))

    def _key_of(self, name: str) -> tuple:
        """The (kind, boundaries) key of a numeric field's transform, its `Transform` kept
        under that key so fields sharing a transform are bucketized together."""
        t = self.spec.transforms.get(name, self._default_transform)
        key = (t.kind, tuple(t.boundaries))
        if key not in self._transforms:
            self._transforms[key] = Transform(*key)
        self._transform_key[name] = key
        return key
