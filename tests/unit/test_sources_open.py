"""open_source: telling sources apart by their form, its errors, and reading stdin (live too)."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from tests.unit.source_helpers import string_ids, tiny_movielens, write
from worker.sources import (CRITEO_SCHEMA, JsonLinesSource, MovieLensSource, SyntheticStream,
                            open_source)

REPO = Path(__file__).resolve().parents[2]


def test_open_source_dispatch(tmp_path):
    synthetic = open_source("synthetic:500:7")
    assert isinstance(synthetic, SyntheticStream) and synthetic.seed == 7
    assert open_source("synthetic:500").seed == 0
    assert isinstance(open_source(str(tiny_movielens(tmp_path / "ml"))), MovieLensSource)
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


def test_stdin_dash_reads_sys_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"label": 1, "features": {"a": "x"}}\n'))
    batch = open_source("-").read(10)
    assert batch.n == 1 and string_ids(batch.columns["a"].values) == string_ids(["x"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("label,a\n0,y\n"))
    source = open_source("-", fmt="csv")
    assert string_ids(source.read(10).columns["a"].values) == string_ids(["y"])
