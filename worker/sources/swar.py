"""Eight bytes at a time: the word-wide tests the delimited scan (`scan_kernel.scan_block`) makes
instead of a branch per byte.

Why: a delimited line's fields are short (a few bytes), and a loop that tests each byte for the
end of its field takes a mispredicted branch at nearly every field end. Found instead from a
bitmap of where the stop bytes lie in 64 bytes at once (`stop_mask`: comparisons of a 64-byte
vector, `equal_bits`, which LLVM lowers to the machine's vector instructions), a field's end
costs a trailing-zero count, and its bytes are then judged and converted as one word: digits or not, ASCII or not, an integer of up to 8 digits in three multiplications
(`plain_integer`).

Every test is exact per byte (no carries between bytes), so the results are the byte loop's.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

U0, ONE = np.uint64(0), np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_BYTES = np.uint64(0x0101010101010101)  # 0x01 in every byte: a byte times this, broadcast
_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_ZERO = np.uint64(0x3030303030303030)  # '0' in every byte
_ABOVE_NINE = np.uint64(0x4646464646464646)  # 0x80 - ':' in every byte
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


@intrinsic
def equal_bits(typingctx, data, base, a, b):
    """Bit j set where data[base + j] (j < 64) is byte `a` or byte `b`: the 64 bytes loaded as
    one vector (unaligned), compared with each byte broadcast, the two results or-ed, and the
    vector of 64 truth values read as the 64 bits of a uint64. data[base:base + 64] must all
    be there."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        vector = ir.VectorType(ir.IntType(8), 64)
        pointer = builder.bitcast(builder.gep(array.data, [args[1]]), vector.as_pointer())
        block = builder.load(pointer, align=1)
        undefined = ir.Constant(vector, ir.Undefined)
        everywhere = ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64)

        def equal(byte):
            one = builder.insert_element(undefined, builder.trunc(byte, ir.IntType(8)),
                                         ir.Constant(ir.IntType(32), 0))
            return builder.icmp_unsigned("==", block,
                                         builder.shuffle_vector(one, undefined, everywhere))
        return builder.bitcast(builder.or_(equal(args[2]), equal(args[3])), ir.IntType(64))
    return types.uint64(data, types.intp, types.int64, types.int64), codegen


@numba.njit(cache=True, inline="always")
def stop_mask(data, base, delimiter, quote):
    """Bit j set where data[base + j] (j < 64) is the delimiter, LF, CR or, when `quote`, '"':
    data[base:base + 64] must all be there."""
    return equal_bits(data, base, np.int64(delimiter), np.int64(34 if quote else delimiter)) \
        | equal_bits(data, base, np.int64(10), np.int64(13))


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
