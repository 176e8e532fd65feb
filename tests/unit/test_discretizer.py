"""Percentile boundaries from a calibration prefix, and `deltaps calibrate` printing them as
spec transforms that the featurizer then uses."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from common.config import load_spec
from common.features import NUMERIC, Batch, Column, Featurizer, Transform
from common.features.discretizer import calibrate, percentile_boundaries
from deploy.cli import cli


def test_boundaries_give_every_bucket_an_equal_share():
    values = np.random.default_rng(0).normal(50.0, 8.0, 100_000)  # a narrow band, as ages
    cuts = percentile_boundaries(values, 10)
    assert cuts.size == 9 and np.all(np.diff(cuts) > 0)
    counts = np.bincount(Transform("buckets", tuple(cuts)).bucketize(values), minlength=10)
    assert counts.size == 10 and np.all(np.abs(counts - 10_000) <= 1), counts
    # log2 buckets, the default, crowd them into two
    assert np.sort(np.bincount(Transform("log2").bucketize(values)))[-2:].sum() > 99_000


def test_a_value_holding_several_shares_is_one_bucket_and_non_finite_values_do_not_count():
    values = np.concatenate([np.zeros(700), np.arange(1.0, 301.0), [np.nan, np.inf, -np.inf]])
    cuts = percentile_boundaries(values, 10)
    assert cuts[0] > 0 and np.all(np.diff(cuts) > 0) and cuts.size == 3
    counts = np.bincount(Transform("buckets", tuple(cuts)).bucketize(values[:1000]))
    assert counts[0] == 700 and counts.sum() == 1000 and np.all(counts[1:] == 100)


@pytest.mark.parametrize("values, buckets, message", [
    ([1.0, 2.0], 1, "buckets must be between 2"),
    ([np.nan, np.inf], 4, "no finite values"),
    ([], 4, "no finite values"),
])
def test_bad_calibration_input_is_refused(values, buckets, message):
    with pytest.raises(ValueError, match=message):
        percentile_boundaries(np.array(values), buckets)


def batch_of(age: np.ndarray, city: list[str] | None = None) -> Batch:
    n = age.size
    cols = {"age": Column.dense(NUMERIC, age)}
    if city is not None:
        cols["city"] = Column.dense("cat", np.array(city, object))
    return Batch(n, cols, labels=np.zeros(n, np.float32))


def test_calibrate_reads_only_the_prefix_and_names_a_field_without_numbers():
    first, later = np.arange(100.0), np.arange(1000.0, 2000.0)
    got = calibrate([batch_of(first[:60], ["a"] * 60), batch_of(first[60:]), batch_of(later)],
                    4, events=100)
    assert got == {"age": [25.0, 50.0, 75.0]}
    with pytest.raises(ValueError, match=r"\['city'\] have no numeric values"):
        calibrate([batch_of(first, ["a"] * 100)], 4, fields=["age", "city"])


def test_the_cli_prints_transforms_that_the_featurizer_buckets_with(tmp_path):
    ages = np.random.default_rng(1).integers(18, 90, 2000)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"label": int(i % 2), "features": {"age": int(a)}}) + "\n"
                            for i, a in enumerate(ages)))
    result = CliRunner().invoke(cli, ["calibrate", str(path), "--buckets", "8",
                                      "--events", "1000"])
    assert result.exit_code == 0, result.output
    spec = load_spec(text=result.output + '[models.m]\ntransforms = ["age"]\n')
    transform = spec.feature_spec("m").transforms["age"]
    assert transform.kind == "buckets"
    assert list(transform.boundaries) == percentile_boundaries(ages[:1000], 8).tolist()
    ids = Featurizer(spec.feature_spec("m")).featurize(batch_of(ages[:1000].astype(float))).ids
    assert np.unique(ids).size == 8 + 1  # eight buckets and the bias
    bad = CliRunner().invoke(cli, ["calibrate", str(path), "--field", "height"])
    assert bad.exit_code != 0 and "['height'] have no numeric values" in bad.output
