"""The compiled scan of delimited blocks: the same hashes and numbers as the pyarrow path, and it
declines every block it cannot read exactly."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from common.hashing import hash_strings
from worker.sources import DelimitedSource
from worker.sources.arrow_columns import hashes_of
from worker.sources.delimited_scan import BlockScanner

SCHEMA = [("label", "label"), ("n1", "num"), ("c1", "cat"), ("x", "skip"), ("n2", "num"),
          ("c2", "cat")]


def _random_lines(rng, n: int, delimiter: str) -> list[str]:
    numbers = ["0", "7", "-3", "007", "12.5", "-0.25", "1e3", "2.5E-4", "-0", "123456789012345",
               "0.000001", "9007199254740992", "1e22", "3.14159265358979", "",
               "999999999999999", "1234567890123456", "000000000000000042", ".5", "7.", "-.25",
               "5.e3"]
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:/ "))
    lines = []
    for _ in range(n):
        cat = ["".join(rng.choice(letters, rng.integers(0, 25))).strip() for _ in range(2)]
        decimal = f"{rng.integers(-10**9, 10**9)}.{rng.integers(0, 10**6):06d}"
        fields = [str(rng.choice(["0", "1", "-1", "+1", "0.0", "1.0"])), str(rng.choice(numbers)),
                  cat[0], "skipped", decimal if rng.random() < 0.5 else str(rng.choice(numbers)),
                  cat[1]]
        lines.append(delimiter.join(fields))
    return lines


@pytest.mark.parametrize("delimiter,ending", [("\t", "\n"), (",", "\n"), ("\t", "\r\n"),
                                              ("|", "\n")])  # "|": past the first 64 bytes
def test_scan_gives_what_the_pyarrow_reader_gives(tmp_path, delimiter, ending):
    text = ending.join(_random_lines(np.random.default_rng(3), 2000, delimiter)) + ending
    path = tmp_path / "r.txt"
    path.write_text(text)
    source = DelimitedSource(path, SCHEMA, delimiter=delimiter)
    block = path.read_bytes()
    assert source._scanner.scan(block, block.count(b"\n")) is not None  # the scan takes it
    fast = source._parse_block(1, block)
    reference = source._read_block(1, block)
    assert fast.n == reference.n == 2000
    np.testing.assert_array_equal(fast.labels, reference.labels)
    assert list(fast.columns) == list(reference.columns)
    for name, col in reference.columns.items():
        got = fast.columns[name]
        assert got.kind == col.kind and got.values.dtype == col.values.dtype
        np.testing.assert_array_equal(got.rows, col.rows)
        np.testing.assert_array_equal(got.values, col.values)  # floats bit for bit, hashes


def test_string_hashes_are_hash_strings_of_the_text():
    rng = np.random.default_rng(0)
    words = ["".join(chr(c) for c in rng.integers(33, 127, rng.integers(1, 40)))
             for _ in range(500)]
    words = [w.replace("\t", "") or "x" for w in words]
    block = "".join(f"1\t{w}\n" for w in words).encode()
    scanned = BlockScanner(["label", "cat"], "\t").scan(block, len(words))
    np.testing.assert_array_equal(scanned.words, hash_strings(np.array(words)))


def test_short_values_hash_as_their_text_with_trailing_nuls_left_out():
    """A value of at most 8 bytes is hashed from the word it was loaded as
    (`string_hash.hash_ascii_word`): every length, NULs inside and at the end (numpy, and so
    `hash_strings`, drops the trailing ones), each also at the block's last 8 bytes."""
    rng = np.random.default_rng(1)
    alphabet = np.array(list("ab9Z_-\0"))
    words = ["".join(rng.choice(alphabet, n)) for n in range(1, 9) for _ in range(60)]
    words = [w for w in words if w.strip("\0")] + ["a\0", "a\0\0\0\0\0\0\0", "\0\0b", "ab\0\0cd"]
    block = "".join(f"1\t{w}\n" for w in words).encode()
    scanned = BlockScanner(["label", "cat"], "\t").scan(block, len(words))
    np.testing.assert_array_equal(scanned.words, hash_strings(np.array(words)))
    for w in words[-4:]:  # the field's 8 bytes run past the block: hashed from its bytes
        one = BlockScanner(["label", "cat"], "\t").scan(f"1\t{w}\n".encode(), 1)
        np.testing.assert_array_equal(one.words, hash_strings(np.array([w])))


@pytest.mark.parametrize("line", [
    "1\t+4\tx",            # a sign pyarrow may read differently: left to it
    "1\t.\tx",             # a bare point
    "1\t-.\tx",
    "1\t.e3\tx",
    "1\tinf\tx",           # not finite: pyarrow's path reports it
    "1\t1e400\tx",         # beyond a double
    "1\t12345678901234567890\tx",  # more digits than the exact fast path
    "1\t3\tx\ty",          # too many fields
    "1\t3",                # too few
    "2\t3\tx",             # not a label
    "",                    # blank
    "1\t3\tx\ry",          # a lone CR (pyarrow ends a line there)
    "1\t9007199254740993\tx",  # above 2**53: one exact operation no longer suffices
])
def test_scan_declines_what_it_cannot_read_exactly(line):
    block = ("1\t1\tok\n" + line + "\n").encode()
    assert BlockScanner(["label", "num", "cat"], "\t").scan(block, 2) is None


def test_utf8_strings_hash_as_their_text():
    rng = np.random.default_rng(1)
    alphabet = list("aZ09_ é") + ["ß", "€", "中", "\U0001F600", "\u07FF", "\uFFFD", "\U0010FFFF"]
    words = ["".join(rng.choice(alphabet, rng.integers(1, 12))).strip() or "x"
             for _ in range(400)] + ["a\x00b", "tail\x00"]
    block = "".join(f"1\t{w}\n" for w in words).encode()
    scanned = BlockScanner(["label", "cat"], "\t").scan(block, len(words))
    np.testing.assert_array_equal(scanned.words, hash_strings(np.array(words)))
    arr = pa.array([w.encode() for w in words], pa.binary())
    take = np.arange(0, len(words), 3)
    np.testing.assert_array_equal(hashes_of(arr, take), hash_strings(np.array(words)[take]))


@pytest.mark.parametrize("raw", [b"\xff", b"ab\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                 b"\xe2\x82"])
def test_malformed_utf8_is_declined_and_the_file_refused_as_not_text(tmp_path, raw):
    block = b"1\t1\tok\n1\t2\t" + raw + b"\n"
    assert BlockScanner(["label", "num", "cat"], "\t").scan(block, 2) is None
    path = tmp_path / "bad.tsv"
    path.write_bytes(block)
    with pytest.raises(ValueError, match="not UTF-8 text near line 1"):
        DelimitedSource(path, "label,n:num,c:cat").read(10)


def test_scan_declines_quotes_in_csv_only():
    assert BlockScanner(["label", "cat"], ",").scan(b'1,"a"\n', 1) is None
    tsv = BlockScanner(["label", "cat"], "\t").scan(b'1\t"a"\n', 1)
    assert tsv is not None and tsv.words[0] == hash_strings(np.array(['"a"']))[0]


def test_declined_blocks_still_read_every_good_line(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("1\t1\ta\tz\t2\tb\n1\t+4\ta\tz\t\tb\n0\tx\ta\tz\t1\tb\n")
    source = DelimitedSource(path, SCHEMA)
    batch = source.read(10)
    assert batch.n == 2 and source.stats.malformed == 1
    assert batch.columns["n1"].values.tolist() == [1.0, 4.0]
    assert batch.columns["c1"].values.tolist() == hash_strings(np.array(["a", "a"])).tolist()
