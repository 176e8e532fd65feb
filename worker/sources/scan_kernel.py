"""The compiled scan of a block of delimited lines (`delimited_scan` says what it takes and why).

numba source: the worker's prebuilt module (`worker.models.prebuilt`) compiles these very
functions ahead of time, so a reader normally runs them without importing numba; numba's JIT
runs them where there is no build (`worker.sources.compiled` picks).
"""
from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from worker.sources.fields import LABEL, NUM, SKIP
from worker.sources.string_hash import hash_ascii, hash_ascii_word, hash_utf8
from worker.sources.swar import (all_ascii, equal_bits, load_word, plain_integer, popcount,
                                 stop_mask)

_MAX_EXACT = 1 << 53
_MAX_SIGNIFICANT = 18  # digits an int64 mantissa holds
_U0, _ONE = np.uint64(0), np.uint64(1)


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


@numba.njit(cache=True, inline="always")
def _stops(data, base, end, delimiter, quote, stops_low, stops_high):
    """Bit j set where data[base + j] ends a field (j < 64, base + j < end): a word at a time
    while 64 bytes remain (`swar.stop_mask`), then byte by byte."""
    if base + 64 <= end:
        return stop_mask(data, base, delimiter, quote)
    mask = _U0
    for j in range(end - base):
        if _ends_field(data[base + j], stops_low, stops_high):
            mask |= _ONE << np.uint64(j)
    return mask


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
    `stops_high`: the delimiter, LF and CR, and for CSV the quote) holds it. Where those
    bytes lie is found 64 bytes at a time (`_stops`, a bitmap), so a field's end is a
    trailing-zero count, and a field of at most 8 bytes is judged as one word
    (`worker.sources.swar`): a categorical value known to be ASCII (nearly all) is hashed
    without decoding UTF-8 (from the word itself when it fits one:
    `string_hash.hash_ascii_word`), and a plain integer (counts, ids) is converted at once;
    anything else is parsed from its bytes (`_parse_number`), with the same value either way."""
    ncols = kinds.size
    end = data.size
    quote = (stops_low >> np.uint64(34)) & _ONE != _U0
    base = 0
    mask = _stops(data, 0, end, delimiter, quote, stops_low, stops_high)
    pos = 0
    count = 0
    for line in range(lines):
        field = 0
        lo = pos
        while True:
            if field >= ncols:
                return line
            while mask == _U0:  # the next stop byte is further on
                base += 64
                if base >= end:
                    return line
                mask = _stops(data, base, end, delimiter, quote, stops_low, stops_high)
            hi = base + np.int64(trailing_zeros(mask))
            mask &= mask - _ONE
            stop = data[hi]
            if stop == 13:
                if hi + 1 >= end or data[hi + 1] != 10:
                    return line
            elif stop == 34:
                return line
            kind = kinds[field]
            n = hi - lo
            if n > 0 and kind != LABEL and kind != SKIP:
                whole = n <= 8 and lo + 8 <= end  # the field fits one word, which is there
                word = load_word(data, lo) if whole else _U0
                if kind == NUM:
                    ok, integer = plain_integer(word, n) if whole else (False, _U0)
                    if ok:
                        value = float(integer)
                    else:
                        ok, value = _parse_number(data, lo, hi, pow10)
                        if not ok:
                            return line
                    numbers[count] = value
                else:  # CAT
                    if whole:
                        ascii = all_ascii(word, n)
                    else:
                        seen = 0
                        for j in range(lo, hi):
                            seen |= data[j]
                        ascii = seen < 0x80
                    if ascii and whole:
                        h = hash_ascii_word(word, n)
                    elif ascii:
                        last = hi
                        while last > lo and data[last - 1] == 0:  # as numpy drops them
                            last -= 1
                        h = hash_ascii(data, lo, last)
                    else:
                        ok, h = hash_utf8(data, lo, hi)
                        if not ok:
                            return line
                    words[count] = h
                fields[count] = slots[field]
                count += 1
            elif kind == LABEL:
                ok, labels[line] = _label(data, lo, hi, ones, one_lengths, zeros, zero_lengths)
                if not ok:
                    return line
            field += 1
            if stop != delimiter:
                if stop == 13:  # CRLF: the LF is a stop of its own, the next one
                    pos = hi + 2
                    while mask == _U0:
                        base += 64
                        mask = _stops(data, base, end, delimiter, quote, stops_low, stops_high)
                    mask &= mask - _ONE
                else:
                    pos = hi + 1
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
    how many newlines `data` holds. Newlines are found 64 bytes at a time, as a bitmap
    (`swar.equal_bits`) whose bits are counted at once, and only a bitmap holding a cut is
    looked into."""
    count = 0
    due = every - carried
    k = 0
    i = 0
    while i + 64 <= data.size:
        found = equal_bits(data, i, np.int64(10), np.int64(10))
        seen = np.int64(popcount(found))
        if count + seen >= due:
            while found:
                count += 1
                if count == due:
                    cuts[k] = i + np.int64(trailing_zeros(found)) + 1
                    k += 1
                    due += every
                found &= found - _ONE
        else:
            count += seen
        i += 64
    for j in range(i, data.size):
        if data[j] == 10:
            count += 1
            if count == due:
                cuts[k] = j + 1
                k += 1
                due += every
    return count
