"""`common.hashing.hash_strings`, compiled for UTF-8 bytes where a reader holds them.

Why: a string feature's id starts from the hash of its code points. Readers hold strings as
UTF-8 bytes (a block of a file, an Arrow column's data buffer); decoding them into a numpy
unicode array only to hash it costs more than the reading. These functions decode and fold
in one pass, giving exactly `hash_strings`' value: code points packed two per 64-bit word,
folded from ``splitmix64(length ^ STR_TAG)``, trailing NULs not counted (numpy drops them).
A value known to be ASCII is hashed without decoding (`hash_ascii`), and one of at most 8 bytes
loaded as one word without touching its bytes again (`hash_ascii_word`).
Only well-formed UTF-8 is taken (no overlong forms, surrogates or values past U+10FFFF); a
value that is not is reported, and the reader decodes it as before (with replacement).
"""
from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from common.hashing import _M1, _M2, GOLDEN, STR_TAG, splitmix64
from worker.sources.swar import first_bytes

# the fold's start for each length of up to 8 code points: splitmix64(length ^ STR_TAG)
_LENGTH_HASH = splitmix64(np.arange(9, dtype=np.uint64) ^ STR_TAG)


@numba.njit(cache=True, inline="always")
def splitmix(z):
    z = z + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _code_point(data, i, hi):
    """(code point, bytes it takes) of the UTF-8 sequence at data[i]; (-1, 0) if malformed."""
    b = np.int64(data[i])
    if b < 0x80:
        return b, 1
    if 0xC2 <= b <= 0xDF:
        n, cp = 2, b & 0x1F
    elif 0xE0 <= b <= 0xEF:
        n, cp = 3, b & 0x0F
    elif 0xF0 <= b <= 0xF4:
        n, cp = 4, b & 0x07
    else:
        return -1, 0
    if i + n > hi:
        return -1, 0
    for k in range(1, n):
        c = np.int64(data[i + k])
        if c & 0xC0 != 0x80:
            return -1, 0
        cp = (cp << 6) | (c & 0x3F)
    if (n == 3 and (cp < 0x800 or 0xD800 <= cp <= 0xDFFF)) or (n == 4 and not
                                                                0x10000 <= cp <= 0x10FFFF):
        return -1, 0
    return cp, n


@numba.njit(cache=True, inline="always")
def hash_utf8(data, lo, hi):
    """(ok, `hash_strings` of the UTF-8 text data[lo:hi]); not ok if it is not well formed."""
    while hi > lo and data[hi - 1] == 0:  # trailing NULs do not count, as in numpy
        hi -= 1
    length = 0
    i = lo
    while i < hi:
        cp, n = _code_point(data, i, hi)
        if n == 0:
            return False, np.uint64(0)
        length += 1
        i += n
    h = splitmix(np.uint64(length) ^ STR_TAG)
    i = lo
    while i < hi:
        first, n = _code_point(data, i, hi)
        i += n
        word = np.uint64(first)
        if i < hi:
            second, n = _code_point(data, i, hi)
            i += n
            word |= np.uint64(second) << np.uint64(32)
        h = splitmix(h ^ word)
    return True, h


@numba.njit(cache=True, inline="always")
def hash_ascii(data, lo, hi):
    """`hash_utf8` of data[lo:hi] known to hold only ASCII bytes and no trailing NUL: each byte
    is its code point, so the length and the words come without decoding (one pass). For the
    readers' kernels, which are compiled without reference counting (`_nrt=False`): inlined
    into one that counts references, every call would count one to `data`."""
    h = splitmix(np.uint64(hi - lo) ^ STR_TAG)
    i = lo
    while i + 1 < hi:
        h = splitmix(h ^ (np.uint64(data[i]) | (np.uint64(data[i + 1]) << np.uint64(32))))
        i += 2
    if i < hi:
        h = splitmix(h ^ np.uint64(data[i]))
    return h


@numba.njit(cache=True, inline="always")
def hash_ascii_word(word, n):
    """`hash_ascii` of the first `n` (1 to 8) bytes of `word`, ASCII bytes loaded as one
    little-endian word (`swar.load_word`), trailing NULs not counted (numpy drops them): each
    pair of code points is a 16-bit slice of the word, and the length's own hash comes from a
    table, so the fold is one splitmix per two bytes with no byte read again, its first not
    waiting for a splitmix of the length. The loop ends when only NULs are left, the trailing
    ones, which the length leaves out as well (the bytes above the highest non-zero one)."""
    w = word & first_bytes(n)
    h = _LENGTH_HASH[(np.uint64(71) - np.uint64(leading_zeros(w))) >> np.uint64(3)]
    while w:
        h = splitmix(h ^ ((w & np.uint64(0xFF)) | ((w & np.uint64(0xFF00)) << np.uint64(24))))
        w >>= np.uint64(16)
    return h


@numba.njit(cache=True, inline="always")
def same_bytes(data, a, b, n):
    """Whether data[a:a + n] and data[b:b + n] hold the same bytes (a name met again)."""
    for j in range(n):
        if data[a + j] != data[b + j]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def hash_values(offsets, data, take, out):
    """Hash values `take` of a column given as value offsets into `data` into `out`; returns
    the position in `take` of the first malformed value, or -1."""
    for k in range(take.size):
        j = take[k]
        ok, h = hash_utf8(data, offsets[j], offsets[j + 1])
        if not ok:
            return k
        out[k] = h
    return -1
