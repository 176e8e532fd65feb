"""JSON lines sources: values, lists, weights, malformed lines, field kinds across chunks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.features import NUMERIC, concat_batches
from tests.unit.source_helpers import read_all, string_ids, write
from worker.sources import JsonLinesSource


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
    assert string_ids(batch.columns["g"].values) == string_ids(["x", "y", "z"])


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
    assert string_ids(batch.columns["u"].values) == string_ids(["a", "e"])
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


def test_arrow_path_gives_the_events_json_loads_gives(tmp_path, monkeypatch):
    """Clean blocks go through pyarrow.json; the events must be those of the line-by-line
    path (json.loads + columnarize), values, kinds, lists, booleans, nulls and weights alike."""
    import json

    import worker.sources.jsonl_arrow as jsonl_arrow
    from tests.unit.source_helpers import events_of
    from worker.sources.jsonl_arrow import to_batch
    lines = [json.dumps({"label": i % 2 if i % 5 else -1, "weight": 1 + i % 3,
                         "features": {"u": f"u{i % 7}", "n": i * 0.5,
                                      "g": [f"g{i % 3}", "é"][:i % 3], "b": bool(i % 2),
                                      "ids": [i, i + 1], "maybe": None}})
             for i in range(300)]
    path = write(tmp_path / "c.jsonl", "\n".join(lines) + "\n")
    fast = JsonLinesSource(path, chunk_lines=64)
    used = []

    def arrow(block):
        batch = to_batch(block)
        used.append(batch is not None)
        return batch
    monkeypatch.setattr(jsonl_arrow, "to_batch", arrow)
    got = concat_batches(read_all(fast, [50]))
    monkeypatch.setattr(jsonl_arrow, "to_batch", lambda block: None)
    slow = concat_batches(read_all(JsonLinesSource(path, chunk_lines=64), [50]))
    assert used and all(used)
    assert events_of(got, strings_as_hashes=True) == events_of(slow, strings_as_hashes=True)
    assert got.weights.tolist() == slow.weights.tolist()
    kinds = {n: c.kind for n, c in slow.columns.items()}
    assert {n: c.kind for n, c in got.columns.items()} == kinds


def test_a_clean_json_lines_file_is_read_without_pyarrow(tmp_path):
    """The common event shape is read by the compiled scan, so `deltaps train FILE.jsonl`
    does not pay for loading pyarrow; a block the scan declines still loads it."""
    repo = Path(__file__).resolve().parents[2]
    clean, odd = tmp_path / "clean.jsonl", tmp_path / "odd.jsonl"
    clean.write_text('{"label": 1, "features": {"a": "x", "n": 2}}\n'
                     '{"label": 0, "features": {"a": "y"}}\n')
    odd.write_text('{"label": 1, "features": {"a": ["x", "y"]}}\n')  # a list: not the scan's
    code = ("import sys; from worker.sources import open_source; "
            "print(open_source(sys.argv[1]).read(10).n, 'pyarrow' in sys.modules)")
    for path, loaded in ((clean, "False"), (odd, "True")):
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
                             timeout=120, check=True).stdout.split()
        assert out[1] == loaded, (path.name, out)
