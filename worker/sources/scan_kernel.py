"""The compiled scan of a block of delimited lines (`delimited_scan` says what it takes and why).

numba source: the worker's prebuilt module (`worker.models.prebuilt`) compiles these very
functions ahead of time, so a reader normally runs them without importing numba; numba's JIT
runs them where there is no build (`worker.sources.compiled` picks).
"""
from __future__ import annotations

import numba
import numpy as np

from worker.sources.fields import CAT, LABEL, NUM
from worker.sources.string_hash import hash_ascii, hash_utf8

_MAX_EXACT = 1 << 53
_MAX_SIGNIFICANT = 18  # digits an int64 mantissa holds
_EXACT_DIGITS = 15  # an integer of at most 15 digits is below 2**53: exact as a float
_U0, _ONE, _ZERO, _SIX, _FOUR, _TEN = (np.uint64(v) for v in (0, 1, 48, 6, 4, 10))


@numba.njit(cache=True, inline="always")
def _digits(data, i, hi, mantissa, significant):
    """Fold the decimal digits from data[i] on into `mantissa` (leading zeros are not
    significant): (index after them, mantissa, significant digits so far, digits read); stops
    early once there are more than _MAX_SIGNIFICANT significant digits."""
    start = i
    while i < hi and 48 <= data[i] <= 57:
        if mantissa or data[i] != 48:
            significant += 1
            if significant > _MAX_SIGNIFICANT:
                break
            mantissa = mantissa * 10 + (data[i] - 48)
        i += 1
    return i, mantissa, significant, i - start


@numba.njit(cache=True, inline="always")
def _parse_number(data, lo, hi, pow10):
    """(ok, value) of a plain decimal number in data[lo:hi]: -?digits(.digits)?([eE][+-]?digits)?,
    where either side of the point may be empty but not both (.5 and 5. are numbers to
    Python's and numpy's float, to pyarrow and to VW)."""
    i = lo
    negative = data[i] == 45  # '-'
    if negative:
        i += 1
    i, mantissa, significant, digits = _digits(data, i, hi, 0, 0)
    if significant > _MAX_SIGNIFICANT:
        return False, 0.0
    exponent = 0
    if i < hi and data[i] == 46:  # '.'
        i, mantissa, significant, fraction = _digits(data, i + 1, hi, mantissa, significant)
        if significant > _MAX_SIGNIFICANT:
            return False, 0.0
        digits += fraction
        exponent = -fraction
    if digits == 0:
        return False, 0.0
    if i < hi and (data[i] == 101 or data[i] == 69):  # 'e' 'E'
        i += 1
        sign = 1
        if i < hi and (data[i] == 43 or data[i] == 45):
            sign = -1 if data[i] == 45 else 1
            i += 1
        power = 0
        power_digits = 0
        while i < hi and 48 <= data[i] <= 57:
            power = power * 10 + (data[i] - 48)
            power_digits += 1
            if power_digits > 4:
                return False, 0.0
            i += 1
        if power_digits == 0:
            return False, 0.0
        exponent += sign * power
    if i != hi or mantissa > _MAX_EXACT:
        return False, 0.0
    value = float(mantissa)
    if mantissa != 0:
        if 0 < exponent <= 22:
            value = value * pow10[exponent]
        elif -22 <= exponent < 0:
            value = value / pow10[-exponent]
        elif exponent != 0:
            return False, 0.0
    return True, -value if negative else value


@numba.njit(cache=True, inline="always")
def _matches(data, lo, hi, table, lengths):
    for k in range(lengths.size):
        if lengths[k] == hi - lo:
            same = True
            for j in range(hi - lo):
                if data[lo + j] != table[k, j]:
                    same = False
                    break
            if same:
                return True
    return False


@numba.njit(cache=True, inline="always")
def _label(data, lo, hi, ones, one_lengths, zeros, zero_lengths):
    """(ok, label) of the token data[lo:hi]: 1.0 for a one (a bare '1', or a spelling in
    `ones`), 0.0 for a zero (likewise), not ok for anything else."""
    if hi == lo + 1 and (data[lo] == 48 or data[lo] == 49):  # '0' or '1'
        return True, 1.0 if data[lo] == 49 else 0.0
    if _matches(data, lo, hi, ones, one_lengths):
        return True, 1.0
    if _matches(data, lo, hi, zeros, zero_lengths):
        return True, 0.0
    return False, 0.0


@numba.njit(cache=True, inline="always")
def _ends_field(c, stops_low, stops_high):
    """Whether byte `c` ends a field: bit c of the 128-bit set (`stops_low`, `stops_high`)."""
    if c < 64:
        return (stops_low >> np.uint64(c)) & _ONE != _U0
    return c < 128 and (stops_high >> np.uint64(c - 64)) & _ONE != _U0


@numba.njit(cache=True, nogil=True, _nrt=False)
def scan_block(data, lines, delimiter, stops_low, stops_high, kinds, slots, pow10, ones, one_lengths,
               zeros, zero_lengths, labels, words, numbers, fields, offsets):
    """Fill the outputs from `lines` whole lines of `data`; returns -1 when every line was
    taken, else the index of the first line that was not. The values come out line by line
    (`common.features.entries.Entries`): line i's present values are entries ``offsets[i]:
    offsets[i + 1]`` (offsets[0] is 0 on entry), entry e one of field ``slots[j]`` (the j-th
    field of the line), a categorical value's hash in ``words[e]`` and a numeric one in
    ``numbers[e]``, which views the same memory as `words` (its float64 bits).
    One pass over the bytes: a field ends at the delimiter, a line at LF or CRLF; a lone CR
    is not taken, nor a quote where the set of bytes that end a field (`stops_low`,
    `stops_high`: the delimiter, LF and CR, and for CSV the quote) holds it. A field's end is
    found by one shift and test a byte, and a field's bytes are OR-ed on the way, so a
    categorical value known to be ASCII (nearly all) is hashed without decoding UTF-8. A
    numeric field's digits are folded into an integer as its bytes go by, so a plain integer
    of at most 15 digits (the common case: counts, ids) needs no second pass; anything else
    is parsed again from its bytes (`_parse_number`), with the same value either way."""
    ncols = kinds.size
    end = data.size
    pos = 0
    count = 0
    for line in range(lines):
        field = 0
        lo = pos
        while True:
            if field >= ncols:
                return line
            kind = kinds[field]
            hi = lo
            seen = 0
            integer = _U0  # a numeric field's digits, folded in on the way
            not_digit = _U0  # non-zero once a byte of it is not a digit
            if kind == NUM:
                while hi < end:
                    c = data[hi]
                    if _ends_field(c, stops_low, stops_high):
                        break
                    d = np.uint64(c) - _ZERO  # wraps for bytes below '0'
                    not_digit |= ((d + _SIX) | d) >> _FOUR
                    integer = integer * _TEN + d
                    hi += 1
            else:
                while hi < end:
                    c = data[hi]
                    if _ends_field(c, stops_low, stops_high):
                        break
                    seen |= c
                    hi += 1
            if hi >= end:
                return line
            stop = data[hi]
            if stop == 13:
                if hi + 1 >= end or data[hi + 1] != 10:
                    return line
            elif stop == 34:
                return line
            slot = slots[field]
            if kind == NUM:
                if hi > lo:
                    if not_digit == 0 and hi - lo <= _EXACT_DIGITS:
                        value = float(integer)
                    else:
                        ok, value = _parse_number(data, lo, hi, pow10)
                        if not ok:
                            return line
                    numbers[count] = value
                    fields[count] = slot
                    count += 1
            elif kind == CAT:
                if hi > lo:
                    if seen < 0x80:
                        last = hi
                        while last > lo and data[last - 1] == 0:  # as numpy drops them
                            last -= 1
                        h = hash_ascii(data, lo, last)
                    else:
                        ok, h = hash_utf8(data, lo, hi)
                        if not ok:
                            return line
                    words[count] = h
                    fields[count] = slot
                    count += 1
            elif kind == LABEL:
                ok, labels[line] = _label(data, lo, hi, ones, one_lengths, zeros, zero_lengths)
                if not ok:
                    return line
            field += 1
            if stop != delimiter:
                pos = hi + 2 if stop == 13 else hi + 1
                break
            lo = hi + 1
        if field != ncols:
            return line
        offsets[line + 1] = count
    return -1


@numba.njit(cache=True, nogil=True, _nrt=False)
def line_cuts(data, carried, every, cuts):
    """Where to cut `data` into blocks of `every` whole lines, `carried` lines being already
    read before it: the position after each newline that brings the count of lines to a
    multiple of `every` goes to `cuts`, in order (room for len(data) // every + 1); returns
    how many newlines `data` holds. One pass, a compare per byte."""
    count = 0
    due = every - carried
    k = 0
    for i in range(data.size):
        if data[i] == 10:
            count += 1
            if count == due:
                cuts[k] = i + 1
                k += 1
                due += every
    return count
