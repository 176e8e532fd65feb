"""Eight bytes at a time: the word-wide tests the delimited scan (`scan_kernel.scan_block`) makes
instead of a branch per byte.

Why: a delimited line's fields are short (a few bytes), and a loop that tests each byte for the
end of its field takes a mispredicted branch at nearly every field end. Found instead from a
bitmap of where the stop bytes lie in 64 bytes at once (`stop_mask`), a field's end costs a
trailing-zero count, and its bytes are then judged and converted as one word: digits or not,
ASCII or not, an integer of up to 8 digits in three multiplications (`plain_integer`).

Every test is exact per byte (no carries between bytes), so the results are the byte loop's.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

U0, ONE = np.uint64(0), np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_BYTES = np.uint64(0x0101010101010101)  # 0x01 in every byte: a byte times this, broadcast
_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_ZERO = np.uint64(0x3030303030303030)  # '0' in every byte
_ABOVE_NINE = np.uint64(0x4646464646464646)  # 0x80 - ':' in every byte
_LF, _CR, _QUOTE = (np.uint64(c) * _BYTES for c in (10, 13, 34))
# the 0/1 in bit 0 of each byte, gathered into the top byte (byte j -> bit 56 + j)
_GATHER = np.uint64(0x0102040810204080)
_PAIRS, _QUADS, _HALVES = (np.uint64(0x0F0F0F0F0F0F0F0F), np.uint64(0x00FF00FF00FF00FF),
                           np.uint64(0x0000FFFF0000FFFF))
_TENS, _HUNDREDS, _TEN_THOUSANDS = np.uint64(2561), np.uint64(6553601), np.uint64(42949672960001)


@intrinsic
def load_word(typingctx, data, i):
    """The 8 bytes data[i:i + 8] as one little-endian uint64 (data[i] lowest): one unaligned
    load. The caller makes sure the 8 bytes are there."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.gep(array.data, [args[1]])
        pointer = builder.bitcast(pointer, context.get_value_type(types.uint64).as_pointer())
        return builder.load(pointer, align=1)
    return types.uint64(data, types.intp), codegen


@intrinsic
def popcount(typingctx, x):
    """The number of bits set in a uint64 (one instruction)."""
    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, [args[0]])
    return types.uint64(types.uint64), codegen


@numba.njit(cache=True, inline="always")
def _equal_bytes(word, broadcast):
    """The high bit of each byte of `word` that equals the byte `broadcast` holds everywhere."""
    t = word ^ broadcast
    return ~(((t & _LOW7) + _LOW7) | t | _LOW7)


@numba.njit(cache=True, inline="always")
def stop_mask(data, base, delimiter, quote):
    """Bit j set where data[base + j] (j < 64) is the delimiter, LF, CR or, when `quote`, '"':
    data[base:base + 64] must all be there."""
    d = np.uint64(delimiter) * _BYTES
    q = _QUOTE if quote else d
    mask = U0
    for k in range(8):
        w = load_word(data, base + 8 * k)
        high = _equal_bytes(w, d) | _equal_bytes(w, _LF) | _equal_bytes(w, _CR) | \
            _equal_bytes(w, q)
        mask |= (((high >> np.uint64(7)) * _GATHER) >> np.uint64(56)) << np.uint64(8 * k)
    return mask


@numba.njit(cache=True, inline="always")
def newlines(word):
    """The high bit of each LF byte of `word`."""
    return _equal_bytes(word, _LF)


@numba.njit(cache=True, inline="always")
def first_bytes(n):
    """The mask of a word's first `n` bytes (1 <= n <= 8)."""
    return _ALL if n == 8 else (ONE << np.uint64(8 * n)) - ONE


@numba.njit(cache=True, inline="always")
def all_ascii(word, n):
    """Whether the first `n` bytes of `word` are ASCII (below 0x80)."""
    return word & first_bytes(n) & _HIGH == U0


@numba.njit(cache=True, inline="always")
def plain_integer(word, n):
    """(ok, value) of the first `n` bytes of `word` (1 <= n <= 8) read as decimal digits;
    not ok if one is not a digit."""
    keep = first_bytes(n)
    w = word & keep
    below_zero = ~((w | _HIGH) - _ZERO)  # high bit where a byte < '0' (each is >= 0x80 first)
    above_nine = (w & _LOW7) + _ABOVE_NINE  # high bit where a byte's low 7 bits are > '9'
    if (below_zero | above_nine | w) & keep & _HIGH != U0:
        return False, U0
    digits = w ^ (_ZERO & keep)
    if n < 8:  # the digits to the top: the bytes below are leading zeros
        digits <<= np.uint64(64 - 8 * n)
    digits = ((digits & _PAIRS) * _TENS) >> np.uint64(8)
    digits = ((digits & _QUADS) * _HUNDREDS) >> np.uint64(16)
    return True, ((digits & _HALVES) * _TEN_THOUSANDS) >> np.uint64(32)
