"""The delimited scan's word-at-a-time tests (`worker.sources.swar`) against their byte-by-byte
definitions, on random words and on the bytes next to every boundary."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from worker.sources.swar import all_ascii, load_word, plain_integer, stop_mask


@numba.njit
def _integers(data, lengths, oks, values):
    for i in range(lengths.size):
        ok, value = plain_integer(load_word(data, 8 * i), lengths[i])
        oks[i] = ok
        values[i] = value


@numba.njit
def _ascii(data, lengths, out):
    for i in range(lengths.size):
        out[i] = all_ascii(load_word(data, 8 * i), lengths[i])


@numba.njit
def _masks(data, delimiter, quote, out):
    for i in range(out.size):
        out[i] = stop_mask(data, 64 * i, delimiter, quote)


EDGES = np.array([0, 1, 9, 10, 13, 34, 0x2F, 0x30, 0x39, 0x3A, 0x7F, 0x80, 0xB0, 0xB9, 0xFF],
                 np.uint8)


def _random_bytes(rng, size: int) -> np.ndarray:
    """Digits half of the time, else edges of every test and anything."""
    pick = rng.random(size)
    return np.where(pick < 0.5, rng.integers(0x30, 0x3A, size),
                    np.where(pick < 0.8, rng.choice(EDGES, size), rng.integers(0, 256, size))
                    ).astype(np.uint8)


def test_plain_integers_are_the_digits_value_and_anything_else_is_not_one():
    rng = np.random.default_rng(0)
    words = 50_000
    data = _random_bytes(rng, 8 * words)
    data[: 8 * 1000] = rng.integers(0x30, 0x3A, 8 * 1000)  # plenty of all-digit words
    lengths = rng.integers(1, 9, words)
    oks, values = np.zeros(words, np.bool_), np.zeros(words, np.uint64)
    _integers(data, lengths, oks, values)
    for i in range(words):
        field = bytes(data[8 * i: 8 * i + lengths[i]])
        digits = all(0x30 <= c <= 0x39 for c in field)
        assert oks[i] == digits, field
        if digits:
            assert values[i] == int(field), field


def test_ascii_is_every_byte_below_0x80_of_the_field():
    rng = np.random.default_rng(1)
    words = 20_000
    data = _random_bytes(rng, 8 * words)
    lengths = rng.integers(1, 9, words)
    out = np.zeros(words, np.bool_)
    _ascii(data, lengths, out)
    want = [all(c < 0x80 for c in data[8 * i: 8 * i + lengths[i]]) for i in range(words)]
    assert out.tolist() == want


@pytest.mark.parametrize("delimiter,quote", [(9, False), (44, True), (124, False)])
def test_stop_masks_mark_exactly_the_delimiter_newlines_and_quotes(delimiter, quote):
    rng = np.random.default_rng(2)
    data = _random_bytes(rng, 64 * 2000)
    data[rng.integers(0, data.size, 20_000)] = delimiter
    out = np.zeros(2000, np.uint64)
    _masks(data, delimiter, quote, out)
    stops = {delimiter, 10, 13} | ({34} if quote else set())
    for i in range(2000):
        want = sum(1 << j for j in range(64) if data[64 * i + j] in stops)
        assert int(out[i]) == want
