"""A compiled scan of a block of TSV/CSV lines: labels, numbers and string hashes in one pass.

Why by hand, beside pyarrow's reader: a delimited file's journey ends in feature ids, and
turning pyarrow's binary columns into something to hash costs more than reading the bytes
once and hashing each categorical field where it lies. The scan takes only the clean case,
which is nearly every block of a real file: every line has the schema's number of fields,
labels and numbers are written plainly, categorical values are well-formed UTF-8, and a CSV
block holds no quote character. At the first line it cannot take it gives up on the block, which then
goes through pyarrow's reader (`DelimitedSource`), whose rules and messages decide what is
malformed. So the scan never judges a line; it only says "not mine".

Numbers: up to 18 significant digits (at most 2**53) with a power of ten within 10**±22 are converted with
one exact multiplication or division of two exactly represented doubles, which is correctly
rounded (Clinger's fast path), so they equal what pyarrow parses; anything else is not taken.
Categorical values are hashed as `common.hashing.hash_strings` hashes their text
(`string_hash`), so a file and a predict request give the same ids.
"""
from __future__ import annotations

import numba
import numpy as np

from worker.sources.fields import ONE_LABELS, ZERO_LABELS
from worker.sources.string_hash import hash_utf8

SKIP, LABEL, NUM, CAT = 0, 1, 2, 3
KIND_CODES = {"skip": SKIP, "label": LABEL, "num": NUM, "cat": CAT}
_MAX_EXACT = 1 << 53
_POW10 = np.array([10.0 ** k for k in range(23)])


def _label_table(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(s) for s in labels)
    table = np.zeros((len(labels), width), np.uint8)
    for i, s in enumerate(labels):
        table[i, :len(s)] = np.frombuffer(s.encode(), np.uint8)
    return table, np.array([len(s) for s in labels], np.int64)


_ONES, _ONE_LENGTHS = _label_table(ONE_LABELS)
_ZEROS, _ZERO_LENGTHS = _label_table(ZERO_LABELS)


@numba.njit(cache=True, inline="always")
def _parse_number(data, lo, hi, pow10):
    """(ok, value) of a plain decimal number in data[lo:hi]: -?digits(.digits)?([eE][+-]?digits)?"""
    i = lo
    negative = data[i] == 45  # '-'
    if negative:
        i += 1
    mantissa = 0
    significant = 0
    exponent = 0
    digits = 0
    while i < hi and 48 <= data[i] <= 57:
        if mantissa or data[i] != 48:
            significant += 1
            if significant > 18:
                return False, 0.0
            mantissa = mantissa * 10 + (data[i] - 48)
        digits += 1
        i += 1
    if digits == 0:
        return False, 0.0
    if i < hi and data[i] == 46:  # '.'
        i += 1
        fraction = 0
        while i < hi and 48 <= data[i] <= 57:
            if mantissa or data[i] != 48:
                significant += 1
                if significant > 18:
                    return False, 0.0
            mantissa = mantissa * 10 + (data[i] - 48)
            exponent -= 1
            fraction += 1
            i += 1
        if fraction == 0:
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


@numba.njit(cache=True, nogil=True)
def scan_block(data, lines, delimiter, kinds, slots, no_quotes, pow10, ones, one_lengths,
               zeros, zero_lengths, labels, numbers, number_present, hashes, hash_present):
    """Fill the outputs (one column per line) from `lines` whole lines of `data`; returns -1
    when every line was taken, else the index of the first line that was not. ``slots[j]`` is
    field j's row in `numbers` or `hashes` by its kind. One pass over the bytes: a field ends
    at the delimiter, a line at LF or CRLF; a lone CR is not taken."""
    ncols = kinds.size
    end = data.size
    pos = 0
    for line in range(lines):
        field = 0
        lo = pos
        while True:
            if field >= ncols:
                return line
            hi = lo
            while hi < end:
                c = data[hi]
                if c == delimiter or c == 10 or c == 13 or (no_quotes and c == 34):
                    break
                hi += 1
            if hi >= end:
                return line
            stop = data[hi]
            if stop == 13:
                if hi + 1 >= end or data[hi + 1] != 10:
                    return line
            elif stop == 34:
                return line
            kind = kinds[field]
            slot = slots[field]
            if kind == LABEL:
                if _matches(data, lo, hi, ones, one_lengths):
                    labels[line] = 1.0
                elif _matches(data, lo, hi, zeros, zero_lengths):
                    labels[line] = 0.0
                else:
                    return line
            elif kind == NUM:
                present = hi > lo
                if present:
                    ok, value = _parse_number(data, lo, hi, pow10)
                    if not ok:
                        return line
                    numbers[slot, line] = value
                number_present[slot, line] = present
            elif kind == CAT:
                present = hi > lo
                if present:
                    ok, h = hash_utf8(data, lo, hi)
                    if not ok:
                        return line
                    hashes[slot, line] = h
                hash_present[slot, line] = present
            field += 1
            if stop != delimiter:
                pos = hi + 2 if stop == 13 else hi + 1
                break
            lo = hi + 1
        if field != ncols:
            return line
    return -1


class BlockScanner:
    """The scan for one schema: its kinds and output rows worked out once; `scan` returns
    the block's columns, or None when the block must go through the full reader."""

    def __init__(self, kinds: list[str], delimiter: str):
        self.kinds = np.array([KIND_CODES[k] for k in kinds], np.int64)
        self.slots = np.zeros(len(kinds), np.int64)
        self.numeric = [j for j, k in enumerate(kinds) if k == "num"]
        self.categorical = [j for j, k in enumerate(kinds) if k == "cat"]
        for slot, j in enumerate(self.numeric):
            self.slots[j] = slot
        for slot, j in enumerate(self.categorical):
            self.slots[j] = slot
        self.delimiter = ord(delimiter)
        self.no_quotes = delimiter == ","

    def scan(self, block: bytes, lines: int):
        """(labels, numbers, number_present, hashes, hash_present) by field slot, or None."""
        data = np.frombuffer(block, np.uint8)
        labels = np.zeros(lines, np.float32)
        numbers = np.empty((len(self.numeric), lines), np.float64)
        number_present = np.empty((len(self.numeric), lines), np.bool_)
        hashes = np.empty((len(self.categorical), lines), np.uint64)
        hash_present = np.empty((len(self.categorical), lines), np.bool_)
        first_bad = scan_block(data, lines, self.delimiter, self.kinds, self.slots,
                               self.no_quotes, _POW10, _ONES, _ONE_LENGTHS, _ZEROS,
                               _ZERO_LENGTHS, labels, numbers, number_present, hashes,
                               hash_present)
        if first_bad >= 0:
            return None
        return labels, numbers, number_present, hashes, hash_present
