"""Event sources: parsing, missing values, malformed lines, chunking, stdin, MovieLens, factory."""
from __future__ import annotations

import gzip
import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from common.config import load_spec
from common.features import CATEGORICAL, NUMERIC, Batch, Featurizer, concat_batches
from worker.sources import (CRITEO_SCHEMA, MAX_REPORTED, MOVIELENS_SPEC_TOML, DelimitedSource,
                            JsonLinesSource, MovieLensSource, SyntheticStream, open_source,
                            parse_schema, write_synthetic)

REPO = Path(__file__).resolve().parents[2]
MOVIELENS = (REPO / "../shared/data/movielens-100k").resolve()
needs_movielens = pytest.mark.skipif(not (MOVIELENS / "u.data").is_file(),
                                     reason=f"MovieLens 100k not found at {MOVIELENS}")


def events_of(batch: Batch) -> list[dict]:
    """Per-event view of a batch, for comparing batches however they were cut."""
    out = [{"label": float(batch.labels[i])} for i in range(batch.n)]
    for name, col in batch.columns.items():
        for row, value in zip(col.rows.tolist(), col.values.tolist()):
            out[row].setdefault(name, []).append(value)
    return out


def read_all(source, sizes) -> list[Batch]:
    """Read with the given batch sizes (cycled) until the source is exhausted."""
    batches, k = [], 0
    while (batch := source.read(sizes[k % len(sizes)])) is not None:
        batches.append(batch)
        k += 1
    return batches


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- delimited ------------------------------------------------------------------------------

SCHEMA = "label,n1:num,c1:cat,x:skip,c2:cat"


def test_tsv_columns_values_and_missing_rows(tmp_path):
    path = write(tmp_path / "a.tsv", "1\t3\tred\tzz\tq\n0\t\tblue\tzz\t\n-1\t-2.5\t\tzz\tw\n")
    batch = DelimitedSource(path, SCHEMA).read(10)
    assert batch.n == 3
    assert batch.labels.dtype == np.float32 and batch.labels.tolist() == [1, 0, 0]
    assert set(batch.columns) == {"n1", "c1", "c2"}  # skipped column absent
    n1, c1, c2 = batch.columns["n1"], batch.columns["c1"], batch.columns["c2"]
    assert n1.kind == NUMERIC and n1.values.dtype == np.float64
    assert n1.rows.tolist() == [0, 2] and n1.values.tolist() == [3.0, -2.5]
    assert c1.kind == CATEGORICAL and c1.values.dtype.kind == "U"
    assert c1.rows.tolist() == [0, 1] and c1.values.tolist() == ["red", "blue"]
    assert c2.rows.tolist() == [0, 2] and c2.values.tolist() == ["q", "w"]
    assert all(c.rows.dtype == np.int64 for c in batch.columns.values())


def test_number_forms_and_non_ascii_strings(tmp_path):
    values = ["-3", "+4", "007", "1.5", "1e3", "-0.25", "123456789012345", "1234567890123456789"]
    lines = "".join(f"1\t{v}\tcafé-{i}\n" for i, v in enumerate(values))
    batch = DelimitedSource(write(tmp_path / "n.tsv", lines), "label,n:num,c:cat").read(100)
    assert batch.columns["n"].values.tolist() == [float(v) for v in values]
    assert batch.columns["c"].values.tolist() == [f"café-{i}" for i in range(len(values))]


def test_integer_columns_with_signs_and_bad_values(tmp_path):
    values = ["-3", "+4", "007", "0", "-12", "", "123456789012345"]
    lines = "".join(f"1\t{v}\n" for v in values)
    batch = DelimitedSource(write(tmp_path / "i.tsv", lines), "label,n:num").read(100)
    assert batch.columns["n"].values.tolist() == [float(v) for v in values if v]
    assert batch.columns["n"].rows.tolist() == [0, 1, 2, 3, 4, 6]
    source = DelimitedSource(write(tmp_path / "j.tsv", lines + "0\t-\n0\t4-\n0\t-12\n"),
                             "label,n:num")
    assert source.read(100).columns["n"].values.tolist()[-2:] == [1.23456789012345e14, -12.0]
    assert [line for line, _ in source.stats.examples] == [8, 9]


def test_label_forms(tmp_path):
    good = ["1", "0", "-1", "0.0", "1.0", "+1"]
    path = write(tmp_path / "l.tsv", "".join(f"{v}\tx\n" for v in good + ["2", "yes", ""]))
    source = DelimitedSource(path, "label,c:cat")
    batch = source.read(100)
    assert batch.labels.tolist() == [1, 0, 0, 0, 1, 1]
    assert source.stats.malformed == 3
    assert [line for line, _ in source.stats.examples] == [7, 8, 9]


def test_malformed_lines_are_counted_logged_and_skipped(tmp_path, caplog):
    lines = ["1\t1\ta\tz\tb",      # 1 ok
             "0\t2\ta",            # 2 too few fields
             "1\t3\ta\tz\tb\textra",  # 3 too many
             "7\t4\ta\tz\tb",      # 4 bad label
             "0\tfive\ta\tz\tb",   # 5 bad number
             "0\tinf\ta\tz\tb",    # 6 not finite
             "",                   # 7 blank: skipped silently
             "0\t7\tc\tz\t"]       # 8 ok
    source = DelimitedSource(write(tmp_path / "m.tsv", "\n".join(lines) + "\n"), SCHEMA)
    with caplog.at_level(logging.WARNING, logger="deltaps.sources"):
        batch = source.read(100)
    assert batch.n == 2 and source.stats.events == 2
    assert batch.columns["n1"].values.tolist() == [1.0, 7.0]
    assert batch.columns["c1"].values.tolist() == ["a", "c"]
    assert batch.columns["c2"].rows.tolist() == [0]
    assert source.stats.malformed == 5
    assert [line for line, _ in source.stats.examples] == [2, 3, 4, 5, 6]
    reasons = dict(source.stats.examples)
    assert "fields" in reasons[2] and "label" in reasons[4] and "five" in reasons[5]
    logged = [r.getMessage() for r in caplog.records if r.name == "deltaps.sources"]
    assert len(logged) == 5 and any(":4:" in m for m in logged)


def test_only_the_first_malformed_lines_are_logged(tmp_path, caplog):
    n_bad = MAX_REPORTED + 15
    text = "".join("2\tx\n" if i % 2 else "1\tx\n" for i in range(2 * n_bad))
    source = DelimitedSource(write(tmp_path / "b.tsv", text), "label,c:cat")
    with caplog.at_level(logging.WARNING, logger="deltaps.sources"):
        batch = source.read(10_000)
    assert batch.n == n_bad and source.stats.malformed == n_bad
    assert len(source.stats.examples) == MAX_REPORTED
    assert source.stats.examples[0][0] == 2
    skipped = [r for r in caplog.records if "skipped malformed" in r.getMessage()]
    assert len(skipped) == MAX_REPORTED


def _mixed_file(tmp_path, n=103, bad_every=17) -> tuple[Path, list[int]]:
    lines, bad = [], []
    for i in range(n):
        if i % bad_every == 5:
            lines.append("x\t1\tz\tz\tz")  # bad label
            bad.append(i + 1)
        else:
            num = "" if i % 3 == 0 else str(i)
            lines.append(f"{i % 2}\t{num}\tv{i % 7}\tz\t{'' if i % 4 else 'w'}")
    return write(tmp_path / "mixed.tsv", "\n".join(lines) + "\n"), bad


def test_chunk_boundaries_and_changing_batch_sizes(tmp_path):
    path, bad_lines = _mixed_file(tmp_path)
    whole = DelimitedSource(path, SCHEMA).read(10_000)
    source = DelimitedSource(path, SCHEMA, chunk_lines=10)
    sizes = [7, 1, 23, 4, 50]
    batches = read_all(source, sizes)
    assert [b.n for b in batches[:-1]] == [sizes[k % len(sizes)] for k in range(len(batches) - 1)]
    assert 0 < batches[-1].n <= sizes[(len(batches) - 1) % len(sizes)]
    assert events_of(concat_batches(batches)) == events_of(whole)
    assert source.stats.events == whole.n == 103 - len(bad_lines)
    assert [line for line, _ in source.stats.examples] == bad_lines
    for b in batches:
        for col in b.columns.values():
            assert np.all(np.diff(col.rows) >= 0) and (col.rows.size == 0 or col.rows[-1] < b.n)
    assert source.read(5) is None


def test_batches_wrapper_and_invalid_size(tmp_path):
    path, _ = _mixed_file(tmp_path)
    sizes = [b.n for b in DelimitedSource(path, SCHEMA, chunk_lines=8).batches(16)]
    assert sum(sizes) == DelimitedSource(path, SCHEMA).read(1000).n
    assert all(n == 16 for n in sizes[:-1])
    with pytest.raises(ValueError):
        DelimitedSource(path, SCHEMA).read(0)


def test_file_objects_text_and_binary_and_crlf(tmp_path):
    text = "1\t5\ta\tz\tb\r\n0\t6\tc\tz\td\r\n"
    from_text = DelimitedSource(io.StringIO(text), SCHEMA).read(10)
    from_bytes = DelimitedSource(io.BytesIO(text.encode()), SCHEMA).read(10)
    for batch in (from_text, from_bytes):
        assert batch.labels.tolist() == [1, 0]
        assert batch.columns["c2"].values.tolist() == ["b", "d"]  # no stray "\r"
        assert batch.columns["n1"].values.tolist() == [5.0, 6.0]


def test_stdin_dash_reads_sys_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"label": 1, "features": {"a": "x"}}\n'))
    batch = open_source("-").read(10)
    assert batch.n == 1 and batch.columns["a"].values.tolist() == ["x"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("label,a\n0,y\n"))
    source = open_source("-", fmt="csv")
    assert source.read(10).columns["a"].values.tolist() == ["y"]


def test_csv_header_quotes_and_schema_overrides(tmp_path):
    path = write(tmp_path / "h.csv", 'city,label,age\n"Paris, FR",1,31\nOslo,0,\n')
    source = open_source(str(path))
    assert source.schema == [("city", "cat"), ("label", "label"), ("age", "cat")]
    batch = source.read(10)
    assert batch.columns["city"].values.tolist() == ["Paris, FR", "Oslo"]
    assert batch.columns["age"].rows.tolist() == [0]
    typed = DelimitedSource(path, "age:num", delimiter=",", header=True).read(10)
    assert typed.columns["age"].kind == NUMERIC and typed.columns["age"].values.tolist() == [31.0]
    with pytest.raises(ValueError, match="header"):
        DelimitedSource(path, "height:num", delimiter=",", header=True)


def test_parse_schema_and_criteo_schema():
    assert parse_schema("label,i1:num, c1:cat,x:skip,c2") == [
        ("label", "label"), ("i1", "num"), ("c1", "cat"), ("x", "skip"), ("c2", "cat")]
    with pytest.raises(ValueError, match="kind"):
        parse_schema("label,a:number")
    with pytest.raises(ValueError, match="more than once"):
        parse_schema("label,a,a")
    with pytest.raises(ValueError, match="one label"):
        DelimitedSource(io.StringIO(""), "a:cat,b:num")
    with pytest.raises(ValueError, match="one label"):
        DelimitedSource(io.StringIO(""), "label,b:label")
    assert len(CRITEO_SCHEMA) == 40 and CRITEO_SCHEMA[0] == ("label", "label")
    assert [k for _, k in CRITEO_SCHEMA].count("num") == 13
    assert [k for _, k in CRITEO_SCHEMA].count("cat") == 26


def test_gzip_and_synthetic_tsv_round_trip(tmp_path):
    plain = write_synthetic(tmp_path / "s.tsv", 3000, seed=4, chunk_size=1000)
    gz = tmp_path / "s.tsv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    truth = SyntheticStream(3000, 4, chunk_size=1000).read(3000)
    for path in (plain, gz):
        batch = open_source(str(path), chunk_lines=700).read(5000)
        assert batch.n == 3000
        np.testing.assert_array_equal(batch.labels, truth.labels)
        for name, col in truth.columns.items():
            got = batch.columns[name]
            assert got.kind == col.kind
            np.testing.assert_array_equal(got.rows, col.rows)
            expect = col.values if col.kind == NUMERIC else col.values.astype(str)
            np.testing.assert_array_equal(got.values, expect)


# --- JSON lines -----------------------------------------------------------------------------

def test_jsonl_values_lists_weights_and_missing(tmp_path):
    lines = ['{"label": 1, "features": {"u": "a", "n": 2.5, "g": ["x", "y"]}}',
             '{"label": 0, "features": {"u": "b", "g": []}, "weight": 3}',
             '{"label": -1, "features": {"n": 4, "g": ["z"]}}']
    batch = JsonLinesSource(write(tmp_path / "e.jsonl", "\n".join(lines) + "\n")).read(10)
    assert batch.labels.tolist() == [1, 0, 0]
    assert batch.weights.tolist() == [1, 3, 1]
    assert batch.columns["u"].rows.tolist() == [0, 1]
    assert batch.columns["n"].kind == NUMERIC
    assert batch.columns["n"].rows.tolist() == [0, 2]
    assert batch.columns["n"].values.tolist() == [2.5, 4.0]
    assert batch.columns["g"].rows.tolist() == [0, 0, 2]
    assert batch.columns["g"].values.tolist() == ["x", "y", "z"]


def test_jsonl_malformed_lines_are_skipped_with_line_numbers(tmp_path):
    lines = ['{"label": 1, "features": {"u": "a"}}',      # 1 ok
             '{"label": 1, "features": {"u": "b"',        # 2 invalid JSON
             '',                                          # 3 blank
             '{"label": 2, "features": {"u": "c"}}',      # 4 bad label
             '{"label": 0, "features": {"u": {"x": 1}}}',  # 5 wrong feature type
             '[1, 2]',                                    # 6 not an object
             '{"label": 0, "features": {"u": "d"}, "weight": -1}',  # 7 bad weight
             '{"label": 0, "features": {"u": "e"}}']      # 8 ok
    source = JsonLinesSource(write(tmp_path / "bad.jsonl", "\n".join(lines) + "\n"))
    batch = source.read(100)
    assert batch.columns["u"].values.tolist() == ["a", "e"]
    assert batch.labels.tolist() == [1, 0]
    assert [line for line, _ in source.stats.examples] == [2, 4, 5, 6, 7]
    assert source.stats.malformed == 5
    assert "JSON" in source.stats.examples[0][1]
    assert not source.stats.examples[1][1].startswith("event")  # index prefix stripped


def test_jsonl_field_kind_conflicts_across_chunks(tmp_path):
    lines = ['{"label": 1, "features": {"a": 1}}',
             '{"label": 0, "features": {"a": 2}}',
             '{"label": 0, "features": {"a": "three"}}',  # 3: a was numeric
             '{"label": 1, "features": {"a": 4, "b": "x"}}',
             '{"label": 1, "features": {"a": 5, "b": 6}}']  # 5: b was categorical
    for chunk_lines in (1, 2, 100):
        source = JsonLinesSource(write(tmp_path / "k.jsonl", "\n".join(lines) + "\n"),
                                 chunk_lines=chunk_lines)
        batch = concat_batches(read_all(source, [2]))
        assert batch.columns["a"].values.tolist() == [1.0, 2.0, 4.0]
        assert [line for line, _ in source.stats.examples] == [3, 5]


# --- MovieLens ------------------------------------------------------------------------------

def _tiny_movielens(directory: Path) -> Path:
    directory.mkdir()
    write(directory / "u.data", "1\t10\t5\t300\n2\t11\t3\t100\n1\t11\t4\t200\n3\t10\t1\t100\n")
    write(directory / "u.user", "1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    genres = "".join(f"G{i}|{i}\n" for i in range(19)) + "\n"
    write(directory / "u.genre", genres)
    flags10 = ["0"] * 19
    flags10[2] = flags10[7] = "1"
    flags11 = ["0"] * 19
    (directory / "u.item").write_bytes(
        ("10|Amélie (2001)|01-Jan-2001||http://x|" + "|".join(flags10) + "\n"
         "11|Unknown||||" + "|".join(flags11) + "\n").encode("latin-1"))
    return directory


def test_movielens_join_order_and_missing(tmp_path):
    source = MovieLensSource(_tiny_movielens(tmp_path / "ml"))
    batch = source.read(100)
    # Sorted by timestamp, stable: (2,11,t=100), (3,10,t=100), (1,11,t=200), (1,10,t=300).
    cols = batch.columns
    assert cols["user"].values.tolist() == [2, 3, 1, 1]
    assert cols["item"].values.tolist() == [11, 10, 11, 10]
    assert batch.labels.tolist() == [0, 0, 1, 1]
    assert cols["age"].rows.tolist() == [0, 2, 3]  # user 3 is not in u.user
    assert cols["age"].values.tolist() == [53.0, 24.0, 24.0]
    assert cols["gender"].values.tolist() == ["F", "M", "M"]
    assert cols["zip3"].values.tolist() == ["T8H", "857", "857"]
    assert cols["genres"].rows.tolist() == [1, 1, 3, 3]
    assert cols["genres"].values.tolist() == ["G2", "G7", "G2", "G7"]
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
        assert event["gender"] == [user[2]] and event["occupation"] == [user[3]]
        assert event["zip3"] == [user[4][:3]]
        assert event.get("genres", []) == [g for g, f in zip(genres, item[5:]) if f == "1"]
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


# --- open_source ----------------------------------------------------------------------------

def test_open_source_dispatch(tmp_path):
    synthetic = open_source("synthetic:500:7")
    assert isinstance(synthetic, SyntheticStream) and synthetic.seed == 7
    assert open_source("synthetic:500").seed == 0
    assert isinstance(open_source(str(_tiny_movielens(tmp_path / "ml"))), MovieLensSource)
    jl = write(tmp_path / "e.jsonl", '{"label": 1, "features": {}}\n')
    assert isinstance(open_source(str(jl)), JsonLinesSource)
    tsv = open_source(str(write(tmp_path / "c.tsv", "1" + "\t" * 39 + "\n")))
    assert tsv.schema == CRITEO_SCHEMA and tsv.read(5).n == 1
    other = write(tmp_path / "c.data", "1,a\n")
    assert open_source(str(other), fmt="csv", schema="label,a").read(5).n == 1


@pytest.mark.parametrize("spec, message", [
    ("synthetic:many", "synthetic"),
    ("synthetic:1:2:3", "synthetic"),
    ("nowhere.tsv", "no such file"),
    ("DIR", "u.data"),
    ("x.parquet", "format"),
])
def test_open_source_errors(tmp_path, spec, message):
    (tmp_path / "x.parquet").write_text("")
    (tmp_path / "DIR").mkdir()
    target = spec if spec.startswith("synthetic") else str(tmp_path / spec)
    with pytest.raises(ValueError, match=message):
        open_source(target)


def test_open_source_csv_needs_a_label_column(tmp_path):
    path = write(tmp_path / "n.csv", "a,b\n1,2\n")
    with pytest.raises(ValueError, match="label"):
        open_source(str(path))


def test_live_stdin_hands_over_events_as_they_arrive(tmp_path):
    """On a pipe, a read returns the lines that have arrived instead of waiting for a full batch."""
    import subprocess
    import sys
    import time
    reader = ("import sys, time; from worker.sources import JsonLinesSource\n"
              "src = JsonLinesSource('-'); t0 = time.monotonic()\n"
              "while (b := src.read(1000)) is not None:\n"
              "    print(b.n, round(time.monotonic() - t0, 2), flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", reader], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        for i in range(3):
            proc.stdin.write(f'{{"label": 1, "features": {{"a": "{i}"}}}}\n')
        proc.stdin.flush()
        import select
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "no batch while the writer kept the pipe open: the source waited for more"
        first = proc.stdout.readline().split()
        assert first[0] == "3"
        time.sleep(0.3)
        proc.stdin.write('{"label": 0, "features": {"a": "x"}}\n{"label": 1, "features": {}}\n')
        proc.stdin.close()
        assert proc.stdout.readline().split()[0] == "2"
    finally:
        proc.kill()
        proc.wait()
