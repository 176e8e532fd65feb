"""Bad input files: a truncated gzip stream and binary data given as text are clear errors."""
from __future__ import annotations

import gzip
import os

import pytest

from tests.unit.source_helpers import write
from worker.sources import open_source


def _read_all(source) -> int:
    n = 0
    while (batch := source.read(1000)) is not None:
        n += batch.n
    return n


@pytest.mark.parametrize("name", ["t.tsv.gz", "t.jsonl.gz", "t.vw.gz", "t.svm.gz"])
def test_truncated_gzip_names_the_file_after_the_good_events(tmp_path, name):
    line = {"tsv": "1\t{}" + "\t" * 38, "jsonl": '{{"label": 1, "features": {{"a": "{}"}}}}',
            "vw": "1 |a x{} |b " + "y" * 30, "svm": "1 {}:1" + " 12345:1" * 5}[name.split(".")[1]]
    text = "".join(line.format(i) + "\n" for i in range(400_000))
    data = gzip.compress(text.encode(), compresslevel=1)
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    source = open_source(str(path), chunk_lines=1000)
    read = 0
    with pytest.raises(ValueError, match=rf"{name}.*truncated or corrupt") as info:
        while (batch := source.read(1000)) is not None:
            read += batch.n
    assert read > 0 and "line" in str(info.value)
    assert source.stats.events == read


@pytest.mark.parametrize("name", ["b.tsv", "b.csv", "b.vw", "b.svm", "b.jsonl"])
def test_binary_file_given_as_text_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"1\t2\n" + os.urandom(4096) + b"\x00\n")
    with pytest.raises(ValueError, match=rf"{name}.*(binary|UTF-8)"):
        _read_all(open_source(str(path), schema="label,a" if name.endswith("csv") else None))


def test_gzip_data_without_a_gz_name_is_read_as_gzip(tmp_path):
    path = tmp_path / "plain.vw"
    path.write_bytes(gzip.compress(b"1 |a x\n0 |a y\n"))
    assert _read_all(open_source(str(path))) == 2


def test_text_that_is_not_utf8_in_the_first_block_is_refused(tmp_path):
    path = write(tmp_path / "ok.tsv", "1\tcafe\n" * 10)
    with open(path, "ab") as f:
        f.write(b"0\tcaf\xe9\n")
    source = open_source(str(path), schema="label,c:cat")
    with pytest.raises(ValueError, match="UTF-8"):
        _read_all(source)
