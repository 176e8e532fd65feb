"""The compiled scan of JSON lines blocks gives exactly the batch pyarrow's reader gives
(`jsonl_arrow.to_batch`), and declines every block it cannot read exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common.features import Batch
from worker.sources.json_scan import JsonScanner
from worker.sources.jsonl import JsonLinesSource
from worker.sources.jsonl_arrow import to_batch

NUMBERS = ["0", "-3", "12.5", "1e3", "7", "-0.25", "2E-4", "123456789012345", "1.5e+2",
           "9007199254740992", "0.1", "3.14159265358979", "-12"]
STRINGS = ['"a"', '"1"', '""', '"Z\u00fcrich"', '"\u65e5\u672c"', '"two words"', '"\U0001f642"',
           '"' + "long" * 20 + '"', '"x:y,z}"']
NAMES = [f"i{k}" for k in range(1, 8)] + [f"c{k}" for k in range(1, 8)] + ["a b", "K-9", "_"]
LABELS = ["0", "1", "-1", "1.0", "0.0", "-1.00"]


def _lines(rng, n: int, bools: bool = False, weights: bool = True) -> list[str]:
    numeric = {name: rng.random() < 0.5 for name in NAMES}  # a field keeps one kind
    lines = []
    for _ in range(n):
        names = [str(x) for x in rng.permutation(NAMES)[:int(rng.integers(0, len(NAMES)))]]
        sep = str(rng.choice([", ", ",", " , ", ",\t"]))
        colon = str(rng.choice([": ", ":", " :  "]))
        feats = sep.join(f'"{k}"{colon}'
                         + str(rng.choice(NUMBERS if numeric[k] else STRINGS)) for k in names)
        label = str(rng.choice(["true", "false"] if bools else LABELS))
        members = [f'"label"{colon}{label}', f'"features"{colon}{{{feats}}}']
        if weights and rng.random() < 0.3:
            members.append(f'"weight"{colon}{rng.choice(["0", "2", "0.5", "1e1", "3.25"])}')
        rng.shuffle(members)
        lines.append(str(rng.choice(["", " "])) + "{" + sep.join(members) + "}"
                     + str(rng.choice(["", " ", "\t"])))
    return lines


def _block(lines: list[str], end: str = "\n") -> tuple[bytes, int]:
    return (end.join(lines) + end).encode(), len(lines)


def assert_same_batch(got: Batch, want: Batch) -> None:
    assert got.n == want.n
    assert got.labels.dtype == want.labels.dtype
    np.testing.assert_array_equal(got.labels, want.labels)
    assert (got.weights is None) == (want.weights is None)
    if want.weights is not None:
        assert got.weights.dtype == want.weights.dtype
        np.testing.assert_array_equal(got.weights, want.weights)
    assert list(got.columns) == list(want.columns)  # the same order
    for name, col in want.columns.items():
        mine = got.columns[name]
        assert mine.kind == col.kind, name
        assert mine.rows.dtype == col.rows.dtype and mine.values.dtype == col.values.dtype
        np.testing.assert_array_equal(mine.rows, col.rows)
        np.testing.assert_array_equal(mine.values, col.values)
        assert (np.signbit(mine.values) == np.signbit(col.values)).all() \
            if col.values.dtype == np.float64 else True


@pytest.mark.parametrize("seed", range(6))
def test_random_blocks_are_read_as_pyarrow_reads_them(seed):
    rng = np.random.default_rng(seed)
    scanner = JsonScanner()
    for n, bools, weights, end in ((300, False, True, "\n"), (200, True, False, "\n"),
                                   (1, False, True, "\n"), (500, False, False, "\n"),
                                   (300, False, True, "\r\n")):
        block, lines = _block(_lines(rng, n, bools, weights), end)
        got, want = scanner.scan(block, lines), to_batch(block)
        assert want is not None and got is not None
        assert_same_batch(got, want)


def test_the_planted_shape_is_taken():
    line = ('{"label": 1, "features": {"i1": 0, "i2": 0, "i3": 26, "c1": "1", "c2": "1"}}\n'
            '{"label": 0, "features": {"i2": 5, "c1": "6", "c3": "14"}, "weight": 2}\n')
    got = JsonScanner().scan(line.encode(), 2)
    assert got is not None
    assert list(got.columns) == ["c1", "c2", "c3", "i1", "i2", "i3"]
    assert_same_batch(got, to_batch(line.encode()))


DECLINED = [
    '{"label": 1, "features": {"a": null}}',  # null
    '{"label": 1, "features": {"a": [1, 2]}}',  # a list
    '{"label": 1, "features": {"a": {"b": 1}}}',  # nested
    '{"label": 1, "features": {"a": true}}',  # a boolean feature
    '{"label": 1, "features": {"a": "x\\"y"}}',  # an escape
    '{"label": 1, "features": {"a\\u0062": 1}}',  # an escaped key
    '{"label": 1, "features": {"caf\u00e9": 1}}',  # a key that is not ASCII
    '{"label": 1, "features": {"": 1}}',  # an empty key
    '{"label": 1, "features": {"a": 1, "a": 2}}',  # a key twice
    '{"label": 1, "label": 0, "features": {}}',
    '{"label": 2, "features": {"a": 1}}',  # not a label
    '{"label": 1.5, "features": {"a": 1}}',
    '{"label": 1., "features": {"a": 1}}',
    '{"label": 10, "features": {"a": 1}}',
    '{"label": "1", "features": {"a": 1}}',
    '{"label": 1, "features": {"a": 1}, "id": 7}',  # another key
    '{"features": {"a": 1}}',  # no label
    '{"label": 1}',  # no features
    '{"label": 1, "features": {"a": 01}}',  # not JSON numbers
    '{"label": 1, "features": {"a": +1}}',
    '{"label": 1, "features": {"a": .5}}',
    '{"label": 1, "features": {"a": 1.}}',
    '{"label": 1, "features": {"a": 1e}}',
    '{"label": 1, "features": {"a": NaN}}',
    '{"label": 1, "features": {"a": -0}}',  # a negative zero
    '{"label": 1, "features": {"a": 1e400}}',  # not exactly converted
    '{"label": 1, "features": {"a": 0.1234567890123456789}}',
    '{"label": 1, "features": {"a": 1}, "weight": -1}',
    '{"label": 1, "features": {"a": 1}, "weight": "2"}',
    '{"label": 1, "features": {"a": 1}',  # cut short
    '{"label": 1, "features": {"a": 1}} x',
    '{"label": 1, "features": {"a": 1}}\r ',  # a CR that does not end the line
    '{"label": 1, "features": {"a": 1}}\r\r',
    '{"label": 1, "features": {"a": 1}\r}',
    '',  # blank
    '[1]',
]


@pytest.mark.parametrize("bad", DECLINED)
def test_what_is_not_the_common_shape_is_declined(bad):
    good = '{"label": 1, "features": {"a": 1, "b": "x"}}'
    assert JsonScanner().scan(_block([good])[0], 1) is not None
    block, lines = _block([good, bad, good])
    assert JsonScanner().scan(block, lines) is None


@pytest.mark.parametrize("lines", [
    ['{"label": 1, "features": {"a": 1}}', '{"label": 0, "features": {"a": "x"}}'],  # kinds
    ['{"label": true, "features": {"a": 1}}', '{"label": 0, "features": {"a": 2}}'],  # labels
])
def test_a_block_pyarrow_refuses_is_declined(lines):
    block, n = _block(lines)
    assert to_batch(block) is None
    assert JsonScanner().scan(block, n) is None


def test_a_source_reads_the_same_events_either_way(tmp_path, monkeypatch):
    """Through `JsonLinesSource`: blocks the scan takes, blocks it declines (pyarrow, then
    line by line with a bad line reported) and the kind a field first had, all as before."""
    rng = np.random.default_rng(9)
    lines = _lines(rng, 3000)
    lines[1500] = '{"label": 1, "features": {"a": [1, 2]}}'  # declined: pyarrow's
    lines[2500] = '{"label": 1, "features": {'  # malformed: line by line
    lines.insert(0, json.dumps({"label": 1, "features": {"zz": 1}}))
    lines.append(json.dumps({"label": 1, "features": {"zz": "now a string"}}))  # its kind
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    reads = []
    for scan in (True, False):
        if not scan:
            monkeypatch.setattr(JsonScanner, "scan", lambda self, block, n: None)
        with JsonLinesSource(path, chunk_lines=1024) as source:
            reads.append((list(iter(lambda: source.read(700), None)), source.stats.as_dict()))
    (mine, my_stats), (theirs, their_stats) = reads
    assert my_stats == their_stats and my_stats["malformed"] == 2
    assert len(mine) == len(theirs)
    for got, want in zip(mine, theirs):
        assert_same_batch(got, want)


def test_stream_entries_are_decoded_as_pyarrow_decodes_them():
    """Redis and ZeroMQ events (one per message, no newline) take the scan too."""
    from worker.sources.entries import EventDecoder
    events = [line.encode() for line in _lines(np.random.default_rng(9), 200)]
    got, bad = EventDecoder("stream").decode(events)
    assert bad == {}
    assert_same_batch(got, to_batch(b"\n".join(events)))
