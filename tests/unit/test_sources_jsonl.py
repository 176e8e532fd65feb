"""JSON lines sources: values, lists, weights, malformed lines, field kinds across chunks."""
from __future__ import annotations

from common.features import NUMERIC, concat_batches
from tests.unit.source_helpers import read_all, write
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
