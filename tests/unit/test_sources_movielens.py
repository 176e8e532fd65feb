"""The MovieLens 100k source: the join, its order, missing attributes, and its model spec."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.config import load_spec
from common.features import NUMERIC, Featurizer, concat_batches
from tests.unit.source_helpers import events_of, read_all, string_ids, tiny_movielens
from worker.sources import MOVIELENS_SPEC_TOML, MovieLensSource

REPO = Path(__file__).resolve().parents[2]
MOVIELENS = (REPO / "../shared/data/movielens-100k").resolve()
needs_movielens = pytest.mark.skipif(not (MOVIELENS / "u.data").is_file(),
                                     reason=f"MovieLens 100k not found at {MOVIELENS}")


def test_movielens_join_order_and_missing(tmp_path):
    source = MovieLensSource(tiny_movielens(tmp_path / "ml"))
    batch = source.read(100)
    # Sorted by timestamp, stable: (2,11,t=100), (3,10,t=100), (1,11,t=200), (1,10,t=300).
    cols = batch.columns
    assert cols["user"].values.tolist() == [2, 3, 1, 1]
    assert cols["item"].values.tolist() == [11, 10, 11, 10]
    assert batch.labels.tolist() == [0, 0, 1, 1]
    assert cols["age"].rows.tolist() == [0, 2, 3]  # user 3 is not in u.user
    assert cols["age"].values.tolist() == [53.0, 24.0, 24.0]
    # the side tables' strings come as their hashes, as the featurizer hashes strings
    assert cols["gender"].values.tolist() == string_ids(["F", "M", "M"])
    assert cols["zip3"].values.tolist() == string_ids(["T8H", "857", "857"])
    assert cols["genres"].rows.tolist() == [1, 1, 3, 3]
    assert cols["genres"].values.tolist() == string_ids(["G2", "G7", "G2", "G7"])
    assert cols["year"].rows.tolist() == [1, 3] and cols["year"].values.tolist() == [2001.0] * 2
    assert cols["user"].values.dtype == np.int64 and cols["age"].kind == NUMERIC


def _raw_movielens():
    ratings = np.loadtxt(MOVIELENS / "u.data", dtype=np.int64)
    users = {int(p[0]): p for p in (line.split("|") for line in
                                    (MOVIELENS / "u.user").read_text().splitlines())}
    items = {int(p[0]): p for p in (line.split("|") for line in
                                    (MOVIELENS / "u.item").read_text("latin-1").splitlines())}
    genres = [line.split("|")[0] for line in (MOVIELENS / "u.genre").read_text().splitlines()
              if line]
    return ratings, users, items, genres


@needs_movielens
def test_movielens_100k_matches_the_raw_files():
    ratings, users, items, genres = _raw_movielens()
    ordered = ratings[np.argsort(ratings[:, 3], kind="stable")]
    source = MovieLensSource(MOVIELENS)
    batches = read_all(source, [4096, 1000])
    batch = concat_batches(batches)
    assert batch.n == len(ratings) == source.stats.events
    np.testing.assert_array_equal(batch.columns["user"].values, ordered[:, 0])
    np.testing.assert_array_equal(batch.columns["item"].values, ordered[:, 1])
    np.testing.assert_array_equal(batch.labels, ordered[:, 2] >= 4)
    assert 0.5 < batch.labels.mean() < 0.6
    events = events_of(batch)
    for i in np.random.default_rng(0).choice(batch.n, 40, replace=False):
        user, item = users[int(ordered[i, 0])], items[int(ordered[i, 1])]
        event = events[i]
        assert event["age"] == [float(user[1])]
        assert event["gender"] == string_ids([user[2]])
        assert event["occupation"] == string_ids([user[3]])
        assert event["zip3"] == string_ids([user[4][:3]])
        assert event.get("genres", []) == string_ids([g for g, f in zip(genres, item[5:])
                                                      if f == "1"])
        date = item[2]
        assert event.get("year") == ([float(date[-4:])] if date else None)


@needs_movielens
def test_movielens_spec_is_valid_and_featurizes():
    spec = load_spec(text=MOVIELENS_SPEC_TOML)
    model = spec.model("movielens")
    batch = MovieLensSource(MOVIELENS).read(256)
    named = set(model.fields) | {f for cross in model.crosses for f in cross}
    assert named <= set(batch.columns)
    assert {"age", "year"} <= set(spec.feature_spec("movielens").transforms)
    features = Featurizer(spec.feature_spec("movielens")).featurize(batch)
    per_event = np.bincount(features.rows, minlength=batch.n)
    assert per_event.min() > len(model.fields)  # fields + crosses + bias on every event


def test_movielens_ids_are_categorical_in_training_and_serving(tmp_path):
    """User and item ids are ids, not amounts: the reader gives them as categorical integers,
    and a predict instance sending them as JSON numbers gets the very same feature ids under
    the MovieLens spec (whose transforms say they are categorical); with the default model
    training still treats them as ids (never log2 buckets)."""
    from common.features import CATEGORICAL, FeatureSpec, Transform
    batch = MovieLensSource(tiny_movielens(tmp_path / "ml")).read(100)
    assert batch.columns["user"].kind == CATEGORICAL == batch.columns["item"].kind
    spec = load_spec(text=MOVIELENS_SPEC_TOML).feature_spec("movielens")
    only_ids = FeatureSpec(("user", "item"), spec.transforms, (), bias=False)
    trained = Featurizer(only_ids).featurize(batch.slice(0, 1))
    served = Featurizer(only_ids).featurize_events([{"user": 2, "item": 11}])
    assert sorted(trained.ids.tolist()) == sorted(served.ids.tolist())
    default = Featurizer(FeatureSpec(("user",), {}, (), bias=False)).featurize(batch.slice(0, 4))
    bucketed = Featurizer(FeatureSpec(("user",), {"user": Transform("log2")}, (), bias=False))
    amounts = bucketed.featurize_events([{"user": u} for u in (2, 3, 1, 1)])
    assert len(set(default.ids.tolist())) == 3  # three users, three ids
    assert len(set(amounts.ids.tolist())) == 2  # as amounts, users 1 and 2 share a bucket


def test_a_clean_movielens_directory_is_read_without_pyarrow(tmp_path):
    """The published files are plain integers and |-separated side tables: the compiled scan
    and a split read them, so `deltaps train DIR` does not pay for loading pyarrow."""
    directory = tiny_movielens(tmp_path / "ml")
    code = ("import sys; from worker.sources.movielens import MovieLensSource; "
            f"b = MovieLensSource({str(directory)!r}).read(10); "
            "print(b.n, 'pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
                         check=True).stdout.split()
    assert out == ["4", "False"]
