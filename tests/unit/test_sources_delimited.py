"""Delimited sources: parsing, missing values, malformed lines, chunking, file objects, schemas."""
from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path

import numpy as np
import pytest

from common.features import CATEGORICAL, NUMERIC, concat_batches
from tests.unit.source_helpers import events_of, read_all, string_ids, write
from worker.sources import compiled
from worker.sources.lines import LineReader
from worker.sources import (CRITEO_SCHEMA, MAX_REPORTED, DelimitedSource, SyntheticStream,
                            open_source, parse_schema, write_synthetic)

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
    assert c1.kind == CATEGORICAL
    assert c1.rows.tolist() == [0, 1] and string_ids(c1.values) == string_ids(["red", "blue"])
    assert c2.rows.tolist() == [0, 2] and string_ids(c2.values) == string_ids(["q", "w"])
    assert all(c.rows.dtype == np.int64 for c in batch.columns.values())


def test_number_forms_and_non_ascii_strings(tmp_path):
    values = ["-3", "+4", "007", "1.5", "1e3", "-0.25", "123456789012345", "1234567890123456789"]
    lines = "".join(f"1\t{v}\tcafé-{i}\n" for i, v in enumerate(values))
    batch = DelimitedSource(write(tmp_path / "n.tsv", lines), "label,n:num,c:cat").read(100)
    assert batch.columns["n"].values.tolist() == [float(v) for v in values]
    assert string_ids(batch.columns["c"].values) == string_ids([f"café-{i}" for i in range(len(values))])


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
    assert string_ids(batch.columns["c1"].values) == string_ids(["a", "c"])
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
        assert string_ids(batch.columns["c2"].values) == string_ids(["b", "d"])  # no "\r"
        assert batch.columns["n1"].values.tolist() == [5.0, 6.0]


def test_csv_header_quotes_and_schema_overrides(tmp_path):
    path = write(tmp_path / "h.csv", 'city,label,age\n"Paris, FR",1,31\nOslo,0,\n')
    source = open_source(str(path))
    assert source.schema == [("city", "cat"), ("label", "label"), ("age", "cat")]
    batch = source.read(10)
    assert string_ids(batch.columns["city"].values) == string_ids(["Paris, FR", "Oslo"])
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
            if col.kind == NUMERIC:
                np.testing.assert_array_equal(got.values, col.values)
            else:
                assert string_ids(got.values) == string_ids(col.values.astype(str))


@pytest.mark.parametrize("every", [1, 3, 64, 1000])
def test_line_cuts_are_after_every_every_th_newline(every):
    """`scan_kernel.line_cuts` (64 bytes at a time, then byte by byte) against counting the
    newlines one by one: reads of every length around the 64-byte steps, dense and sparse
    newlines, lines carried over from the reads before."""
    rng = np.random.default_rng(every)
    for size in [0, 1, 63, 64, 65, 127, 128, 129, 1000, 4099]:
        for density in (0.02, 0.3, 0.9):
            data = np.where(rng.random(size) < density, 10,
                            rng.integers(0, 256, size)).astype(np.uint8).tobytes()
            carried = int(rng.integers(0, every))
            newlines = [j + 1 for j, c in enumerate(data) if c == 10]
            want = [pos for n, pos in enumerate(newlines, carried + 1) if n % every == 0]
            assert compiled.line_cuts(data, carried, every) == (want, len(newlines))


@pytest.mark.parametrize("block_bytes", [7, 64, 1 << 20])
def test_line_blocks_hold_exactly_the_lines_asked_for(tmp_path, block_bytes):
    """Blocks of whole lines, `max_lines` each but the last, numbered from line 1, however the
    reads cut the file (a read shorter than a line, or holding many blocks); a last line
    without a newline still counts."""
    rng = np.random.default_rng(5)
    lines = [b"x" * int(rng.integers(0, 40)) + b"\t1" for _ in range(1003)]
    path = tmp_path / "lines.tsv"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    reader = LineReader(path, binary=True)
    blocks = list(reader.blocks(100, block_bytes=block_bytes))
    assert [b.count(b"\n") for _, b in blocks] == [100] * 10 + [3]
    assert [first for first, _ in blocks] == [1 + 100 * k for k in range(11)]
    assert b"".join(b for _, b in blocks) == b"\n".join(lines) + b"\n"
