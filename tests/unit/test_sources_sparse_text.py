"""VW text and libsvm sources: the mapping onto fields, weights, malformed lines, chunking, gzip."""
from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from common.features import CATEGORICAL, NUMERIC, FeatureSpec, concat_batches
from tests.unit.source_helpers import events_of, read_all, string_ids, write
from worker.sources import DEFAULT_NAMESPACE, SparseTextSource, SyntheticStream, open_source

VW = ("1 |u a b:1 c:2.5 |v d\n"
      "-1 0.5 'tag |u a\n"
      "| x\n"                  # 3: no label
      "\n"                     # 4: blank, skipped silently
      "0 |u a:zz\n"            # 5: bad value
      "1 2.0\n"                # 6: no features: an event with only the bias
      "1 |  price:3 q\n"
      "3 |u a\n"               # 8: bad label
      "1 -2 |u a\n")           # 9: bad importance weight


def test_vw_namespaces_values_weights_and_malformed_lines(tmp_path):
    source = open_source(str(write(tmp_path / "a.vw", VW)))
    batch = source.read(100)
    assert batch.n == 4
    assert batch.labels.tolist() == [1, 0, 1, 1]
    assert batch.weights.tolist() == [1.0, 0.5, 2.0, 1.0]
    cols = batch.columns
    assert cols["u"].kind == CATEGORICAL
    assert cols["u"].values.tolist() == string_ids(["a", "b", "a"])
    assert cols["u"].rows.tolist() == [0, 0, 1]
    assert cols["v"].values.tolist() == string_ids(["d"])
    assert cols["u.c"].kind == NUMERIC and cols["u.c"].values.tolist() == [2.5]
    assert cols["price"].kind == NUMERIC and cols["price"].rows.tolist() == [3]
    assert cols[DEFAULT_NAMESPACE].values.tolist() == string_ids(["q"])
    assert [line for line, _ in source.stats.examples] == [3, 5, 8, 9]
    reasons = dict(source.stats.examples)
    assert "no label" in reasons[3] and "a:zz" in reasons[5] and "label" in reasons[8]
    assert "weight" in reasons[9]


def test_libsvm_one_hot_numeric_qid_and_labels(tmp_path):
    text = "1 3:1 7:0.5 qid:4\n-1 3:1 9:1\nx 1:1\n+1 2:0\n"
    source = open_source(str(write(tmp_path / "a.svm", text)))
    batch = source.read(10)
    assert batch.n == 3 and batch.labels.tolist() == [1, 0, 1] and batch.weights is None
    assert batch.columns[DEFAULT_NAMESPACE].values.tolist() == string_ids(["3", "3", "9"])
    assert batch.columns[DEFAULT_NAMESPACE].rows.tolist() == [0, 1, 1]
    assert batch.columns["7"].values.tolist() == [0.5]
    assert batch.columns["2"].kind == NUMERIC and batch.columns["2"].rows.tolist() == [2]
    assert "qid" not in batch.columns and "4" not in batch.columns
    assert source.stats.examples[0][0] == 3
    assert open_source(str(write(tmp_path / "b.libsvm", text))).read(10).n == 3


def test_chunks_and_batch_sizes_give_the_same_events(tmp_path):
    lines = [f"{i % 2} {'' if i % 3 else '0.5 '}|a x{i % 5} y:{i % 4} |b z{i % 7}"
             for i in range(97)]
    lines[10] = "|a nolabel"
    path = write(tmp_path / "c.vw", "\n".join(lines) + "\n")
    whole = SparseTextSource(path).read(1000)
    source = SparseTextSource(path, chunk_lines=8)
    batches = read_all(source, [5, 13, 2])
    assert events_of(concat_batches(batches)) == events_of(whole)
    assert whole.n == 96 and source.stats.malformed == 1 and source.stats.examples[0][0] == 11
    for b in batches:
        for col in b.columns.values():
            assert np.all(np.diff(col.rows) >= 0) and (col.rows.size == 0 or col.rows[-1] < b.n)


def test_vw_text_of_the_planted_stream_reads_back_gzipped(tmp_path):
    from bench.vwtext import write_vw
    truth = SyntheticStream(2000, 3, chunk_size=500).read(2000)
    path = tmp_path / "p.vw"
    write_vw([truth], FeatureSpec(), path)
    gz = tmp_path / "p.vw.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    batch = open_source(str(gz), chunk_lines=300).read(5000)
    assert batch.n == 2000
    np.testing.assert_array_equal(batch.labels, truth.labels)
    got = np.bincount(batch.columns["f"].rows, minlength=2000)
    expect = sum(np.bincount(c.rows, minlength=2000) for c in truth.columns.values())
    np.testing.assert_array_equal(got, expect)  # every field of every event, as "name=value"
    c1 = truth.columns["c1"]
    first = [v for r, v in zip(batch.columns["f"].rows, batch.columns["f"].values) if r == 0]
    assert (string_ids([f"c1={c1.values[0]}"])[0] in first) == (c1.rows[0] == 0)


def test_stdin_formats(monkeypatch):
    import sys
    monkeypatch.setattr(sys, "stdin", io.StringIO("1 |u a\n"))
    assert open_source("-", fmt="vw").read(5).columns["u"].values.tolist() == string_ids(["a"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("0 5:1\n"))
    assert open_source("-", fmt="libsvm").read(5).labels.tolist() == [0]
    with pytest.raises(ValueError, match="schema"):
        open_source("-", fmt="vw", schema="label,a")
