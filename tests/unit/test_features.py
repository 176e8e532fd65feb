import bisect
import itertools
import math

import numpy as np
import pytest

from common.errors import InvalidInstance
from common.features import (BIAS_ID, CATEGORICAL, Batch, Column, FeatureSpec, Featurizer,
                             Transform, columnarize, concat_batches, cross_ids)
from common.hashing import combine, hash_ints, hash_string, hash_strings


def ids_per_row(f):
    out = {}
    for r, i in zip(f.rows.tolist(), f.ids.tolist()):
        out.setdefault(r, []).append(i)
    return {r: sorted(v) for r, v in out.items()}


def test_featurizing_a_batch_equals_featurizing_each_event_alone():
    events = [{"label": 1, "features": {"u": "a", "g": ["x", "y"], "age": 30}},
              {"label": 0, "features": {"u": "b"}},
              {"label": 0, "features": {"g": ["z", "x", "y"], "age": 3}},
              {"label": 1, "features": {}}]
    fz = Featurizer(FeatureSpec(crosses=[["u", "g"], ["g", "age"]]))
    whole = ids_per_row(fz.featurize(columnarize(events, with_labels=True)))
    for i, e in enumerate(events):
        alone = ids_per_row(fz.featurize(columnarize([e], with_labels=True)))
        assert alone[0] == whole[i]
    assert len(whole[0]) == 1 + 2 + 1 + 2 + 2 + 1  # u, g*2, age, u×g*2, g×age*2, bias
    assert whole[3] == [BIAS_ID]


def test_same_value_in_different_fields_gives_different_ids():
    f = Featurizer(FeatureSpec(bias=False)).featurize(
        columnarize([{"features": {"a": "x", "b": "x"}}], with_labels=False))
    assert len(set(f.ids.tolist())) == 2


def test_crosses_pair_every_value_within_each_event_only():
    a = (np.array([0, 0, 2]), np.array([1, 2, 3], np.uint64))
    b = (np.array([0, 1, 2, 2]), np.array([10, 20, 30, 40], np.uint64))
    rows, ids = cross_ids([a, b])
    assert rows.tolist() == [0, 0, 2, 2]
    assert len(set(ids.tolist())) == 4
    assert cross_ids([a, None])[0].size == 0


def test_numeric_transforms():
    x = np.array([-5.0, 0.0, 1.0, 3.0, 1000.0])
    assert Transform("log2").bucketize(x).tolist() == [-2, 0, 1, 2, 9]
    assert Transform("buckets", (0, 10)).bucketize(x).tolist() == [0, 1, 1, 1, 2]
    assert Transform("categorical").bucketize(np.array([196.0])).tolist() == [196]


def test_transform_changes_ids_only_across_bucket_boundaries():
    spec = FeatureSpec(transforms={"age": Transform("buckets", (18, 30))}, bias=False)
    f = Featurizer(spec).featurize(columnarize(
        [{"features": {"age": a}} for a in (19, 25, 29, 31)], with_labels=False))
    assert f.ids[0] == f.ids[1] == f.ids[2] != f.ids[3]


def test_int_and_string_columns_and_field_selection():
    batch = Batch(3, {"user": Column.dense(CATEGORICAL, np.array([7, 8, 7])),
                      "skip": Column.dense(CATEGORICAL, np.array(["a", "b", "c"]))})
    f = Featurizer(FeatureSpec(fields=("user",), bias=False)).featurize(batch)
    assert f.rows.tolist() == [0, 1, 2] and f.ids[0] == f.ids[2] != f.ids[1]
    assert f.ids[0] == hash_ints(np.array([7]), np.uint64(hash_string("user")))[0]


@pytest.mark.parametrize("event, text", [
    ({"label": 2, "features": {}}, "label must be 0 or 1"),
    ({"label": 1, "features": {"a": {"b": 1}}}, "unsupported type dict"),
    ({"label": 1, "features": {"a": [1.5]}}, "list must hold strings or integers"),
    ({"label": 1, "features": {"a": float("nan")}}, "not finite"),
    ({"label": 1, "features": []}, "'features' must be an object"),
    ({"label": 1, "weight": -1, "features": {}}, "weight must be"),
])
def test_columnarize_rejects_bad_events_by_name(event, text):
    with pytest.raises(InvalidInstance, match=text):
        columnarize([{"label": 0, "features": {}}, event], with_labels=True)


def test_slice_and_concat_are_inverse():
    events = [{"label": i % 2, "features": {"g": ["a"] * (i % 3), "n": float(i)}} for i in range(9)]
    b = columnarize(events, with_labels=True)
    again = concat_batches([b.slice(0, 4), b.slice(4, 7), b.slice(7, 9)])
    fz = Featurizer(FeatureSpec())
    assert ids_per_row(fz.featurize(again)) == ids_per_row(fz.featurize(b))
    np.testing.assert_array_equal(again.labels, b.labels)


def test_strings_and_their_hashes_join_and_featurize_alike():
    events = [{"label": 1, "features": {"g": f"v{i % 4}"}} for i in range(6)]
    b = columnarize(events, with_labels=True)
    hashed = b.slice(3, 6)
    col = hashed.columns["g"]
    hashed.columns["g"] = Column(col.kind, col.rows, hash_strings(col.values))  # as a reader hands over
    joined = concat_batches([b.slice(0, 3), hashed])
    assert joined.columns["g"].values.dtype == np.uint64
    fz = Featurizer(FeatureSpec())
    assert ids_per_row(fz.featurize(joined)) == ids_per_row(fz.featurize(b))


def _random_events(rng, n: int) -> list[dict]:
    """Events mixing every kind of value: strings, ints, floats, lists, booleans, None,
    fields missing from some events, and one field never present in others."""
    events = []
    for _ in range(n):
        f = {}
        if rng.random() < 0.8:
            f["u"] = f"user{rng.integers(5)}"
        if rng.random() < 0.7:
            f["g"] = [f"g{k}" for k in rng.integers(0, 4, rng.integers(0, 3))]
        if rng.random() < 0.7:
            f["age"] = float(rng.integers(0, 90))
        if rng.random() < 0.5:
            f["id"] = int(rng.integers(0, 1000))
        if rng.random() < 0.3:
            f["price"] = float(rng.normal() * 100)
        if rng.random() < 0.3:
            f["vip"] = bool(rng.random() < 0.5)
        if rng.random() < 0.2:
            f["gone"] = None
        events.append({"features": f} if rng.random() < 0.5 else f)
    return events


def _reference_ids(spec: FeatureSpec, events: list[dict]) -> tuple[list[int], list[int]]:
    """(rows, ids) of event dicts featurized one event and one value at a time, straight from
    the hashing functions: the independent reference the vectorized path must match, id for id
    and in order (fields in order, each field's values in event order, crosses, bias)."""
    feats = [e.get("features", e) for e in events]

    def values(f, name):  # one event's values of a field: ("cat", strings) or ("num", numbers)
        v = f.get(name)
        if v is None:
            return None
        if isinstance(v, bool):
            return "cat", ["true" if v else "false"]
        if isinstance(v, list):
            return "cat", [str(x) for x in v]
        return ("cat", [v]) if isinstance(v, str) else ("num", [v])

    def bucket(name, x):
        t = spec.transforms.get(name, Transform("log2"))
        if t.kind == "log2":
            return int(math.copysign(math.floor(math.log2(1 + abs(x))), x)) if x else 0
        if t.kind == "buckets":
            return bisect.bisect_right(list(t.boundaries), x)
        return round(x)

    def ids(name, f):
        kind_values = values(f, name)
        if kind_values is None:
            return []
        kind, vs = kind_values
        seed = np.uint64(hash_string(name))
        if kind == "cat":
            # a string is hashed on its own, then with its field's seed like an integer
            return [int(hash_ints(hash_strings(np.array([v])), seed)[0]) for v in vs]
        return [int(hash_ints(np.array([bucket(name, v)]), seed)[0]) for v in vs]

    seen = list(dict.fromkeys(name for f in feats for name, v in f.items() if v is not None))
    if spec.fields:
        plain = list(spec.fields)
    else:  # categorical fields first, then numeric ones, each in first-seen order
        kinds = {name: values(f, name)[0] for f in feats for name in f if f[name] is not None}
        plain = [n for n in seen if kinds[n] == "cat"] + [n for n in seen if kinds[n] == "num"]
    rows, out = [], []
    for name in plain:
        for r, f in enumerate(feats):
            for i in ids(name, f):
                rows.append(r)
                out.append(i)
    tag = np.uint64(hash_string("\x00cross"))
    for cross in spec.crosses:
        for r, f in enumerate(feats):
            for combo in itertools.product(*(ids(name, f) for name in cross)):
                h = np.array([combo[0]], np.uint64) ^ tag
                for other in combo[1:]:
                    h = combine(h, np.array([other], np.uint64))
                rows.append(r)
                out.append(int(h[0]))
    if spec.bias:
        rows += list(range(len(events)))
        out += [hash_string("\x00bias")] * len(events)
    return rows, out


@pytest.mark.parametrize("spec", [
    FeatureSpec(),
    FeatureSpec(bias=False),
    FeatureSpec(transforms={"age": Transform("buckets", (18, 30, 50)),
                            "id": Transform("categorical")},
                crosses=[["u", "g"], ["g", "age"], ["u", "id", "vip"]]),
    FeatureSpec(fields=["id", "u", "missing"], transforms={"id": Transform("categorical")},
                crosses=[["u", "price"]]),
])
def test_featurizing_dicts_gives_the_ids_of_a_per_event_reference(spec):
    """Event dicts (a predict request, a JSON-lines chunk) featurize to exactly the ids, in
    exactly the order, that hashing each value of each event by hand gives."""
    rng = np.random.default_rng(7)
    fz = Featurizer(spec)
    for n in (1, 2, 7, 64):
        events = _random_events(rng, n)
        got = fz.featurize_events(events)
        want_rows, want_ids = _reference_ids(spec, events)
        assert got.n == n
        assert got.rows.tolist() == want_rows
        assert got.ids.tolist() == want_ids
    assert fz.featurize_events([]).ids.size == 0


def test_fields_present_only_as_cross_parts_give_crosses_and_no_plain_features():
    spec = FeatureSpec(fields=["absent"], crosses=[["a", "b"]])
    events = [{"a": "x", "b": "y"}, {"a": "z"}]
    f = Featurizer(spec).featurize_events(events)
    assert f.rows.tolist() == [0, 0, 1]  # the cross of event 0, then the two biases
    assert f.ids[1:].tolist() == [BIAS_ID, BIAS_ID]
    assert (f.rows.tolist(), f.ids.tolist()) == _reference_ids(spec, events)


def test_unsigned_and_narrow_integer_columns_hash_like_int64_ones():
    values = np.array([1, 2**63 + 5, 7], np.uint64)
    a = Batch(3, {"u": Column.dense(CATEGORICAL, values),
                  "w": Column.dense(CATEGORICAL, np.array([3, 4, 5], np.int32))})
    b = Batch(3, {"u": Column.dense(CATEGORICAL, values.view(np.int64)),
                  "w": Column.dense(CATEGORICAL, np.array([3, 4, 5], np.int64))})
    fz = Featurizer(FeatureSpec())
    assert fz.featurize(a).ids.tolist() == fz.featurize(b).ids.tolist()
