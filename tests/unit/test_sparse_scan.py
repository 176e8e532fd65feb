"""The compiled scan of VW text and libsvm blocks gives exactly the events `parse_block` gives
(categorical values as the hashes of its strings), and declines every block it cannot read
exactly."""
from __future__ import annotations

import numpy as np
import pytest

from common.features import CATEGORICAL, NUMERIC, Batch
from common.hashing import hash_strings
from worker.sources import sparse_scan
from worker.sources.lines import MalformedLines
from worker.sources.sparse_text import parse_block

VALUES = ["", ":1", ":1.0", ":2.5", ":-3", ":0", ":1e3", ":-0", ":007", ":0.000001",
          ":123456789012345", ":2.5E-4", ":9007199254740992", ":01", ":.5", ":3.", ":-.25"]
NAMES = ["a", "b", "price", "x1", "A_b-c", "n.m", "long" * 9, "7", "e=3", "'q", "qid",
         "caf\u00e9", "\u65e5\u672c\u8a9e", "\U0001f642x", "\u00df"]
SPACES = ["|u", "|v", "|", "|u:0.5", "|w:2", "|v ", "|\u00fcber", "|\u00fcber:2"]
LABELS = ["1", "0", "-1", "+1", "1.0", "0.0", "-1.0"]


def _features(rng, k: int) -> str:
    return " ".join(str(rng.choice(NAMES)) + str(rng.choice(VALUES)) for _ in range(k))


def _vw_lines(rng, n: int) -> list[str]:
    lines = []
    for _ in range(n):
        head = [str(rng.choice(LABELS))]
        if rng.random() < 0.3:
            head.append(str(rng.choice(["0.5", "2", "0", "3.25", "1"])))
        if rng.random() < 0.2:
            head.append(str(rng.choice(["'tag", "'", "'t:x"])))
        if rng.random() < 0.1:
            head.append("7")  # a third number (VW's initial prediction): ignored
        body = "".join(f"{rng.choice(SPACES)} {_features(rng, int(rng.integers(0, 6)))} "
                       for _ in range(int(rng.integers(0, 4))))
        sep = str(rng.choice([" ", "\t", "  "]))
        lines.append(sep.join(head) + (sep + body if body else "")
                     + str(rng.choice(["", " ", "\r"])))
        if rng.random() < 0.05:
            lines.append(str(rng.choice(["", "  ", "\t"])))  # blank: not an event
    return lines


def _libsvm_lines(rng, n: int) -> list[str]:
    lines = []
    for _ in range(n):
        items = [f"{rng.integers(1, 40)}{rng.choice(VALUES[1:])}"
                 for _ in range(int(rng.integers(0, 12)))]
        if rng.random() < 0.2:
            items.insert(0, f"qid:{rng.integers(1, 9)}")
        lines.append(" ".join([str(rng.choice(LABELS))] + items))
    return lines


def assert_same_events(got: Batch, want: Batch) -> None:
    assert got.n == want.n
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.labels.dtype == want.labels.dtype
    if want.weights is None:
        assert got.weights is None
    else:
        np.testing.assert_array_equal(got.weights, want.weights)
        assert got.weights.dtype == want.weights.dtype
    assert list(got.columns) == list(want.columns)  # same fields, same order
    for name, col in want.columns.items():
        mine = got.columns[name]
        assert mine.kind == col.kind, name
        np.testing.assert_array_equal(mine.rows, col.rows)
        if col.kind == CATEGORICAL:
            assert mine.values.dtype == np.uint64
            np.testing.assert_array_equal(mine.values, hash_strings(col.values))
        else:
            assert mine.values.dtype == col.values.dtype == np.float64
            np.testing.assert_array_equal(np.signbit(mine.values), np.signbit(col.values))
            np.testing.assert_array_equal(mine.values, col.values)


def _both(text: str, libsvm: bool) -> tuple[Batch | None, Batch, MalformedLines]:
    block = text.encode()
    bad = MalformedLines()
    want = parse_block(block, libsvm, bad)
    return sparse_scan.scan(block, block.count(b"\n"), libsvm), want, bad


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("libsvm", [False, True])
def test_scan_gives_what_parse_block_gives(seed, libsvm):
    rng = np.random.default_rng(seed)
    lines = (_libsvm_lines if libsvm else _vw_lines)(rng, 500)
    got, want, bad = _both("\n".join(lines) + "\n", libsvm)
    assert not bad.reasons
    assert got is not None
    assert_same_events(got, want)
    assert len(want.columns) > 3 and want.n > 400 and (libsvm or want.weights is not None)


def test_one_namespace_and_one_numeric_field_without_sorting():
    got, want, _ = _both("1 |f a b c:2\n0 |f b c:3 a\n", False)
    assert got is not None and set(got.columns) == {"f", "f.c"}
    assert_same_events(got, want)


def test_a_numeric_field_named_like_a_namespace_replaces_its_column_as_parse_block_does():
    got, want, _ = _both("1 |a x | a:2 q\n0 |a y\n", False)
    assert got is not None and want.columns["a"].kind == NUMERIC
    assert_same_events(got, want)


@pytest.mark.parametrize("line,libsvm", [
    ("| a", False), ("2 |a b", False), ("1 -1 |a b", False), ("1 |a b:x", False),
    ("1 |a :2", False), ("1 |a b:1e400", False), ("1 |a b:", False),
    ("1 |a b:1:2", False), ("1 |a b:+2", False), ("1 |a b:inf", False), ("x 1:1", True),
    ("1 qid:", True), ("1 :3", True), ("1 3:nan", True), ("1 3:1e999", True)])
def test_scan_declines_what_parse_block_calls_malformed_or_reads_otherwise(line, libsvm):
    got, _want, _bad = _both(f"1 |a ok\n{line}\n" if not libsvm else f"1 2:1\n{line}\n", libsvm)
    assert got is None


@pytest.mark.parametrize("text", [
    "1 |a b\x00c\n",              # a NUL byte
    "1 | x:2 |default x:3\n",     # "|" and "|default" are one field
    "1 |a b.c:2 |a.b c:3\n",      # "a.b.c" twice
])
def test_scan_declines_blocks_parse_block_reads_with_rules_it_does_not_copy(text):
    assert sparse_scan.scan(text.encode(), text.count("\n"), False) is None


def test_too_many_numeric_fields_for_the_table_are_declined():
    n = sparse_scan.MAX_FIELDS + 1
    text = "".join(f"1 {k}:2\n" for k in range(n))
    assert sparse_scan.scan(text.encode(), n, True) is None
    text = "".join(f"1 {k}:2\n" for k in range(n - 1))
    got, want, _ = _both(text, True)
    assert got is not None
    assert_same_events(got, want)


@pytest.mark.parametrize("raw", [b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80",
                                 b"\xf5\x80\x80\x80"])
def test_malformed_utf8_names_are_declined_and_ignored_in_a_tag(raw):
    for name in (b"1 |a x" + raw + b"\n", b"1 |a x" + raw + b":2\n", b"1 |x" + raw + b" a\n"):
        assert sparse_scan.scan(name, 1, False) is None
    assert sparse_scan.scan(b"1 " + raw + b":2\n", 1, True) is None
    block = b"1 'tag" + raw + b" |a x\n"
    got = sparse_scan.scan(block, 1, False)
    assert got is not None
    assert_same_events(got, parse_block(block, False, MalformedLines()))


@pytest.mark.parametrize("libsvm", [False, True])
def test_scanned_events_featurize_to_the_ids_of_parse_blocks_strings(libsvm):
    """A .vw file and a predict request of the same event must give the same feature ids."""
    from common.features import Featurizer, FeatureSpec
    lines = (_libsvm_lines if libsvm else _vw_lines)(np.random.default_rng(11), 300)
    got, want, _ = _both("\n".join(lines) + "\n", libsvm)
    featurizer = Featurizer(FeatureSpec())
    mine, theirs = featurizer.featurize(got), featurizer.featurize(want)
    assert theirs.ids.size > 1000
    np.testing.assert_array_equal(mine.rows, theirs.rows)
    np.testing.assert_array_equal(mine.ids, theirs.ids)


def test_a_scanner_reused_block_after_block_leaves_earlier_batches_as_they_were():
    scanner = sparse_scan.SparseScanner(False)
    rng = np.random.default_rng(12)
    texts = ["\n".join(_vw_lines(rng, 300)) + "\n" for _ in range(3)]
    batches = [scanner.scan(t.encode(), t.count("\n")) for t in texts]
    for text, batch in zip(texts, batches):
        assert batch is not None
        assert_same_events(batch, parse_block(text.encode(), False, MalformedLines()))
