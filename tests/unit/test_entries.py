"""Batches read event by event (`common.features.entries`): featurized from their entries they
give the very (event, id) pairs their columns give, grouped by event; cut, joined and conformed
they hold the same values as the columnar batch would."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import InvalidInstance
from common.features import (CATEGORICAL, NUMERIC, Batch, FeatureSpec, Featurizer, Transform,
                             concat_batches)
from common.features.conform import conform
from common.features.entries import Entries
from worker.models.prebuilt import Kernel, kernel
from worker.sources import DelimitedSource

NAMES = ("n1", "c1", "n2", "c2")
KINDS = (NUMERIC, CATEGORICAL, NUMERIC, CATEGORICAL)


def random_entries(rng, n: int) -> Entries:
    """n events, each with some of the fields (a field missing or given twice), numbers
    across signs, magnitudes and exact powers of two, categorical words at random."""
    fields, words = [], []
    offsets = [0]
    specials = np.array([0.0, -0.0, 1.0, -1.0, 3.0, 2.0 ** 40 - 1, 2.0 ** 40, -(2.0 ** 53),
                         0.49, 2.5, -2.5, 1e18])
    for _ in range(n):
        for f in rng.integers(0, len(NAMES), rng.integers(0, 7)).tolist():
            fields.append(f)
            if KINDS[f] == NUMERIC:
                x = rng.choice(specials) if rng.random() < 0.3 else rng.normal(0, 10.0 ** rng.integers(0, 6))
                words.append(np.float64(x).view(np.uint64))
            else:
                words.append(np.uint64(rng.integers(0, 2 ** 63)))
        offsets.append(len(fields))
    return Entries(NAMES, KINDS, np.array(offsets, np.int64), np.array(fields, np.int16),
                   np.array(words, np.uint64))


def pairs(features) -> list[tuple[int, int]]:
    return sorted(zip(features.rows.tolist(), features.ids.tolist()))


SPECS = [FeatureSpec(), FeatureSpec(bias=False), FeatureSpec(fields=["c2", "n1"]),
         FeatureSpec(transforms={"n2": Transform("categorical")}),
         FeatureSpec(transforms={"n1": Transform("buckets", [0.0, 10.0])}),  # from columns
         FeatureSpec(crosses=[["c1", "n2"]])]                               # from columns


@pytest.mark.parametrize("spec,compiled", [(spec, "prebuilt") for spec in SPECS]
                         + [(SPECS[0], "jit")])
def test_entries_featurize_to_the_pairs_their_columns_give(spec, compiled):
    entries = random_entries(np.random.default_rng(0), 3000)
    batch = Batch.of_entries(entries, np.zeros(entries.n, np.float32))
    k = kernel() if compiled == "prebuilt" else Kernel()  # the build, or numba's JIT
    got = Featurizer(spec, k.mix_fields, k.mix_entries).featurize(batch)
    want = Featurizer(spec).featurize(Batch(batch.n, dict(batch.columns), batch.labels))
    assert pairs(got) == pairs(want)
    if got.offsets is not None:  # grouped by event: each event's entries in a row
        assert np.all(np.diff(got.rows) >= 0)
        np.testing.assert_array_equal(np.diff(got.offsets), np.bincount(got.rows,
                                                                        minlength=batch.n))
    else:
        assert spec.crosses or spec.transforms.get("n1", Transform()).kind == "buckets"


def test_log2_buckets_come_from_the_exponent_as_numpys_log2_gives_them():
    x = np.concatenate([np.random.default_rng(1).normal(0, 1e4, 100_000),
                        np.arange(-70_000, 70_000, dtype=np.float64), [0.0, -0.0, 0.5, 1e300]])
    got = Transform("log2").bucketize(x)
    np.testing.assert_array_equal(got, (np.sign(x) * np.floor(np.log2(1 + np.abs(x))))
                                  .astype(np.int64))
    # just below a power of two, where a rounded log2 could reach the next integer
    assert Transform("log2").bucketize(np.array([2.0 ** 52 - 2])).tolist() == [51]


def test_cut_and_joined_entries_hold_the_values_of_cut_and_joined_columns():
    entries = random_entries(np.random.default_rng(2), 500)
    labels = np.arange(500, dtype=np.float32) % 2
    batch = Batch.of_entries(entries, labels)
    columnar = Batch(batch.n, dict(batch.columns), labels)
    parts = [batch.slice(0, 120), batch.slice(120, 121), batch.slice(121, 500)]
    assert all(p.entries is not None for p in parts)
    joined = concat_batches(parts)
    assert joined.entries is not None and joined.n == 500
    np.testing.assert_array_equal(joined.labels, labels)
    for cut, reference in ((parts[2], columnar.slice(121, 500)), (joined, columnar)):
        for name in NAMES:
            np.testing.assert_array_equal(cut.columns[name].rows, reference.columns[name].rows)
            np.testing.assert_array_equal(cut.columns[name].values,
                                          reference.columns[name].values)
    mixed = concat_batches([parts[0], columnar.slice(120, 500)])  # one part columnar
    assert mixed.entries is None and mixed.n == 500
    np.testing.assert_array_equal(mixed.columns["c1"].values, columnar.columns["c1"].values)


def test_conforming_entries_converts_only_what_the_schema_changes():
    entries = random_entries(np.random.default_rng(3), 200)
    batch = Batch.of_entries(entries, np.zeros(200, np.float32))
    assert conform(batch, {"n1": "num", "c1": "cat", "c2": "id"}) is batch
    assert batch.columns._columns is None  # never made: nothing asked for them
    whole = Batch.of_entries(Entries(("n",), (NUMERIC,), np.array([0, 1, 2]),
                                     np.zeros(2, np.int16),
                                     np.array([3.0, 5.0]).view(np.uint64)))
    ids = conform(whole, {"n": "id"})
    assert ids.entries is None and ids.columns["n"].values.tolist() == [3, 5]
    with pytest.raises(InvalidInstance, match="'n1' is an integer id"):
        conform(batch, {"n1": "id"})


def test_a_tsv_file_reads_as_entries_and_a_name_given_twice_keeps_its_last_column(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("label\tx\tc\tx\n1\t4\ta\t7\n0\t\tb\t8\n")
    batch = DelimitedSource(path, [("x", "num")], header=True).read(10)
    assert batch.entries is not None and batch.entries.names == ("c", "x")
    assert batch.columns["x"].values.tolist() == [7.0, 8.0]
    assert batch.columns["c"].rows.tolist() == [0, 1]
