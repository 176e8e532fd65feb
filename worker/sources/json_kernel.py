"""The compiled scan of a block of JSON lines (`json_scan` says what it takes and why).

numba source: the worker's prebuilt module (`worker.models.prebuilt`) compiles this very
function ahead of time; numba's JIT runs it where there is no build (`worker.sources.compiled`).
Compiled without numba's runtime and allocating nothing: the caller passes every output; so
the small helpers it inlines (`_blanks`, `string_hash.hash_ascii`, ...) count no reference to
`data` per call, as they would in a function compiled with the runtime.
"""
from __future__ import annotations

import numba
import numpy as np

from worker.sources.scan_kernel import _parse_number
from worker.sources.string_hash import hash_ascii, hash_utf8, same_bytes

_FNV = np.uint64(0x100000001B3)
_NUM, _CAT = 1, 2  # a field's kind in `field_kind`
_EVENTS, _ENTRIES, _FIELDS, _WEIGHTED, _CATS = range(5)  # the slots of `counts`
_EXACT_DIGITS = 15  # an integer of at most 15 digits is below 2**53: exact as a float
_LABEL, _NUMBER, _BOOL = 1, 2, 4  # the label styles seen, in `styles`



@numba.njit(cache=True, inline="always")
def _blanks(data, pos):
    """The index of the first byte at or after data[pos] that is not a space or a tab."""
    while data[pos] == 32 or data[pos] == 9:
        pos += 1
    return pos


@numba.njit(cache=True, inline="always")
def _fraction_and_exponent(data, pos):
    """Past a JSON number's integer digits at data[pos]: (the index after its optional
    fraction, '.' digits, and exponent, [eE] [sign] digits; whether it had neither), or
    (-1, False) when one is malformed."""
    plain = True
    if data[pos] == 46:  # '.'
        plain = False
        pos += 1
        if not 48 <= data[pos] <= 57:
            return -1, False
        while 48 <= data[pos] <= 57:
            pos += 1
    if data[pos] == 101 or data[pos] == 69:  # 'e' 'E'
        plain = False
        pos += 1
        if data[pos] == 43 or data[pos] == 45:
            pos += 1
        if not 48 <= data[pos] <= 57:
            return -1, False
        while 48 <= data[pos] <= 57:
            pos += 1
    return pos, plain

@numba.njit(cache=True, nogil=True, _nrt=False)
def scan_json(data, lines, pow10, labels, weights, ent_field, ent_row, ent_num, ent_hash,
              field_span, field_hash, field_kind, field_last, field_size, field_start, slots,
              cat_rows, cat_hash, num_rows, num_values, counts):
    """Fill the outputs from `lines` whole lines of `data` (each ending in LF); returns -1
    when every line was taken, else the index of the first line that was not.

    Each line is one event ``{"label": ..., "features": {...}, "weight"?: w}`` (keys in any
    order): its label in `labels`, its weight, if it has one, in `weights` (ones on entry).
    Each feature is an entry (its field's index, its event, its number or its string's
    `hash_strings` hash) in the `ent_*` scratch, categorical ones from its front and numeric
    ones from its back; field f (name bytes `field_span[f]`, found
    through the open-addressing table `slots` of name hashes `field_hash`, cleared here)
    is numbered in order of first appearance, with its kind (`_NUM`, `_CAT`) and its entry
    count. At the end the entries are sorted by field, counting sort: categorical fields'
    (rows, hashes) into `cat_rows`, `cat_hash`, numeric fields' into `num_rows`,
    `num_values`, each field's from `field_start[f]`, in field order, its entries in event
    order. `counts` gets the number of events, entries, fields, 1 if any line has a weight,
    and the number of categorical entries.

    Not taken: anything but that shape written plainly. A blank line, a CR but one just
    before the line's LF, another key, a key twice, a label other than 0, 1, -1 (each also
    with a fraction of zeros, 1.0), true or false (or both numbers and booleans in a block), a value that is not a number or a string (null, true, a list, an object), a
    string or key with an escape or a control byte, a key that is empty or not printable
    ASCII, a string value that is not well-formed UTF-8, a number that is not JSON's or not
    exactly converted (`scan_kernel._parse_number`), a negative zero, a negative weight, a
    field that is numeric in one event and a string in another, or more fields or entries
    than the outputs hold."""
    end = data.size
    if end == 0 or data[end - 1] != 10:  # every loop below stops at the final LF
        return 0
    mask = slots.size - 1
    for k in range(slots.size):
        slots[k] = -1
    pos = 0
    n_cat = 0  # categorical entries, from the front of the scratch
    n_num = 0  # numeric entries, from its back
    n_fields = 0
    weighted = 0
    styles = 0
    for line in range(lines):
        if pos >= end:
            return line
        pos = _blanks(data, pos)
        if data[pos] != 123:  # '{'
            return line
        pos += 1
        seen = 0  # the top-level keys so far, as `_LABEL`, 2 (features), 4 (weight)
        while True:
            pos = _blanks(data, pos)
            if data[pos] != 34:  # '"'
                return line
            lo = pos + 1
            pos = lo
            while data[pos] >= 97 and data[pos] <= 122:  # a top-level key: lower case
                pos += 1
            if data[pos] != 34:
                return line
            size = pos - lo
            key = 0
            if size == 5 and data[lo] == 108 and data[lo + 1] == 97 and data[lo + 2] == 98 \
                    and data[lo + 3] == 101 and data[lo + 4] == 108:  # label
                key = 1
            elif size == 8 and data[lo] == 102 and data[lo + 1] == 101 and data[lo + 2] == 97 \
                    and data[lo + 3] == 116 and data[lo + 4] == 117 and data[lo + 5] == 114 \
                    and data[lo + 6] == 101 and data[lo + 7] == 115:  # features
                key = 2
            elif size == 6 and data[lo] == 119 and data[lo + 1] == 101 and data[lo + 2] == 105 \
                    and data[lo + 3] == 103 and data[lo + 4] == 104 and data[lo + 5] == 116:
                key = 4  # weight
            if key == 0 or seen & key:
                return line
            seen |= key
            pos += 1
            pos = _blanks(data, pos)
            if data[pos] != 58:  # ':'
                return line
            pos += 1
            pos = _blanks(data, pos)
            if key == 1:
                c = data[pos]
                if c == 116 and data[pos + 1] == 114 and data[pos + 2] == 117 \
                        and data[pos + 3] == 101:  # true
                    labels[line] = 1.0
                    styles |= _BOOL
                    pos += 4
                elif c == 102 and data[pos + 1] == 97 and data[pos + 2] == 108 \
                        and data[pos + 3] == 115 and data[pos + 4] == 101:  # false
                    labels[line] = 0.0
                    styles |= _BOOL
                    pos += 5
                elif c == 48 or c == 49 or (c == 45 and data[pos + 1] == 49):  # 0, 1, -1
                    labels[line] = 1.0 if c == 49 else 0.0
                    styles |= _NUMBER
                    pos += 1 if c != 45 else 2
                    if data[pos] == 46:  # 1.0, 0.00, -1.0: the same numbers, as floats
                        pos += 1
                        if data[pos] != 48:
                            return line
                        while data[pos] == 48:
                            pos += 1
                else:
                    return line
                c = data[pos]
                if not (c == 44 or c == 125 or c == 32 or c == 9):  # a label token ends
                    return line
            elif key == 4:
                lo = pos
                if data[pos] == 45:
                    return line  # a weight is >= 0 (and -0 is not taken)
                if data[pos] < 48 or data[pos] > 57 or (data[pos] == 48 and
                                                        48 <= data[pos + 1] <= 57):
                    return line
                while 48 <= data[pos] <= 57:
                    pos += 1
                pos, _plain = _fraction_and_exponent(data, pos)
                if pos < 0:
                    return line
                ok, w = _parse_number(data, lo, pos, pow10)
                if not ok:
                    return line
                weights[line] = w
                weighted = 1
            else:  # the features object
                if data[pos] != 123:
                    return line
                pos += 1
                pos = _blanks(data, pos)
                if data[pos] == 125:  # '}': no features
                    pos += 1
                else:
                    while True:
                        if data[pos] != 34:
                            return line
                        lo = pos + 1
                        pos = lo
                        h = np.uint64(0xCBF29CE484222325)
                        while 32 <= data[pos] <= 126 and data[pos] != 34 and data[pos] != 92:
                            h = (h ^ np.uint64(data[pos])) * _FNV
                            pos += 1
                        if data[pos] != 34 or pos == lo:
                            return line
                        name_end = pos
                        pos += 1
                        pos = _blanks(data, pos)
                        if data[pos] != 58:
                            return line
                        pos += 1
                        pos = _blanks(data, pos)
                        c = data[pos]
                        value = 0.0
                        vh = np.uint64(0)
                        if c == 34:  # a string: its `hash_strings` hash
                            kind = np.int64(_CAT)
                            vlo = pos + 1
                            pos = vlo
                            high = 0
                            while data[pos] >= 32 and data[pos] != 34 and data[pos] != 92:
                                high |= data[pos]
                                pos += 1
                            if data[pos] != 34:
                                return line
                            vhi = pos
                            pos += 1
                            if high < 0x80:
                                vh = hash_ascii(data, vlo, vhi)
                            else:
                                ok, vh = hash_utf8(data, vlo, vhi)
                                if not ok:
                                    return line
                        else:  # a number, in JSON's grammar
                            kind = np.int64(_NUM)
                            vlo = pos
                            negative = c == 45
                            if negative:
                                pos += 1
                            first = pos
                            integer = 0
                            while 48 <= data[pos] <= 57:
                                integer = integer * 10 + (data[pos] - 48)
                                pos += 1
                            digits = pos - first
                            if digits == 0 or (digits > 1 and data[first] == 48):
                                return line
                            pos, plain = _fraction_and_exponent(data, pos)
                            if pos < 0:
                                return line
                            if plain and digits <= _EXACT_DIGITS:
                                value = float(integer)
                                if negative:
                                    value = -value
                            else:
                                ok, value = _parse_number(data, vlo, pos, pow10)
                                if not ok:
                                    return line
                            if negative and value == 0.0:
                                return line
                        k = np.int64(h & np.uint64(mask))
                        while True:
                            f = slots[k]
                            if f < 0:
                                if n_fields >= field_hash.size:
                                    return line
                                f = n_fields
                                n_fields += 1
                                slots[k] = f
                                field_span[f, 0] = lo
                                field_span[f, 1] = name_end
                                field_hash[f] = h
                                field_kind[f] = kind
                                field_last[f] = -1
                                field_size[f] = 0
                                break
                            if field_hash[f] == h:
                                a = field_span[f, 0]
                                if field_span[f, 1] - a == name_end - lo and \
                                        same_bytes(data, a, lo, name_end - lo):
                                    break
                            k = (k + 1) & mask
                        if field_kind[f] != kind or field_last[f] == line \
                                or n_cat + n_num >= ent_row.size:
                            return line
                        field_last[f] = line
                        field_size[f] += 1
                        if kind == _CAT:  # from the front
                            ent_field[n_cat] = f
                            ent_row[n_cat] = line
                            ent_hash[n_cat] = vh
                            n_cat += 1
                        else:  # from the back
                            e = ent_row.size - 1 - n_num
                            ent_field[e] = f
                            ent_row[e] = line
                            ent_num[e] = value
                            n_num += 1
                        pos = _blanks(data, pos)
                        if data[pos] == 125:
                            pos += 1
                            break
                        if data[pos] != 44:
                            return line
                        pos += 1
                        pos = _blanks(data, pos)
            pos = _blanks(data, pos)
            if data[pos] == 125:  # '}': the event's end
                pos += 1
                break
            if data[pos] != 44:
                return line
            pos += 1
        pos = _blanks(data, pos)
        if data[pos] == 13:  # a CR before the LF (JSON whitespace; files written on Windows)
            pos += 1
        if data[pos] != 10 or seen & 3 != 3:
            return line
        pos += 1
    if styles == _NUMBER | _BOOL:
        return 0
    at_cat = 0
    at_num = 0
    for f in range(n_fields):
        if field_kind[f] == _CAT:
            field_start[f] = at_cat
            at_cat += field_size[f]
        else:
            field_start[f] = at_num
            at_num += field_size[f]
        field_last[f] = field_start[f]  # now each field's next place
    for e in range(n_cat):
        f = ent_field[e]
        k = field_last[f]
        field_last[f] = k + 1
        cat_rows[k] = ent_row[e]
        cat_hash[k] = ent_hash[e]
    for e in range(ent_row.size - 1, ent_row.size - 1 - n_num, -1):
        f = ent_field[e]
        k = field_last[f]
        field_last[f] = k + 1
        num_rows[k] = ent_row[e]
        num_values[k] = ent_num[e]
    counts[_EVENTS] = lines
    counts[_ENTRIES] = n_cat + n_num
    counts[_FIELDS] = n_fields
    counts[_WEIGHTED] = weighted
    counts[_CATS] = n_cat
    return -1
