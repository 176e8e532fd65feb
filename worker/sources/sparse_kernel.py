"""The compiled scan of a block of VW text or libsvm lines (`sparse_scan` says what it takes).

numba source: the worker's prebuilt module (`worker.models.prebuilt`) compiles this very
function ahead of time; numba's JIT runs it where there is no build (`worker.sources.compiled`).
Compiled without numba's runtime and allocating nothing: the caller passes every output.
"""
from __future__ import annotations

import numba
import numpy as np

from worker.sources.scan_kernel import _label, _parse_number
from worker.sources.string_hash import hash_ascii, hash_utf8, same_bytes, splitmix

_PLAIN, _END, _COLON, _BAD, _UTF8 = 0, 1, 2, 3, 4  # byte classes in a token (`classes`)
_EVENTS, _CATS, _NUMS, _SPACES, _FIELDS, _WEIGHTED = range(6)  # the slots of `counts`


@numba.njit(cache=True, nogil=True, _nrt=False)
def scan_sparse(data, lines, libsvm, classes, pow10, ones, one_lengths, zeros, zero_lengths, labels,
                weights, cat_space, cat_row, cat_hash, num_field, num_row, num_value,
                spaces, field_space, field_span, field_hash, slots, counts):
    """Fill the outputs from `lines` whole lines of `data` (each ending in LF); returns -1
    when every line was taken, else the index of the first line that was not.

    A line with tokens is an event (its label in `labels`, its importance weight, if it has
    one, in `weights`, which holds ones on entry); a blank line is none. A categorical entry
    (a feature of value 1) is its namespace's index in `spaces` ([start, end) of the
    namespace name's first occurrence), its event and the `hash_strings` hash of its name;
    a numeric entry is its field's index (field f: namespace `field_space[f]`, name bytes
    `field_span[f]`, name hash `field_hash[f]`, found through the open-addressing table
    `slots`, cleared here), its event and its value. libsvm lines have one namespace, 0.
    `counts` gets the number of events, categorical entries, numeric entries, namespaces,
    numeric fields, and 1 if any line has a weight. Not taken: a NUL byte, a feature name
    that is not well-formed UTF-8, a line without a label, a label other than 1/0/-1 (+1,
    1.0, 0.0, -1.0), a weight or value not written plainly (`scan_kernel._parse_number`), a
    negative weight, a feature without a name, or more namespaces or numeric fields than the
    tables hold (fewer than 2**15 each, so an index fits the int16 `cat_space` and
    `num_field`). Namespace names are compared as bytes; the caller decodes them."""
    end = data.size
    mask = slots.size - 1
    for k in range(slots.size):
        slots[k] = -1
    pos = 0
    events = 0
    n_cat = 0
    n_num = 0
    n_spaces = 1 if libsvm else 0
    n_fields = 0
    weighted = 0
    for line in range(lines):
        tok = 0
        space = 0 if libsvm else -1  # the namespace so far on the line; -1: the header
        while True:
            while pos < end and (data[pos] == 32 or data[pos] == 9 or data[pos] == 13):
                pos += 1
            if pos >= end:
                return line
            if data[pos] == 10:
                pos += 1
                break
            lo = pos
            hi = pos
            colon = -1
            ascii = True
            bar = not libsvm and data[pos] == 124  # '|': a namespace
            if bar:
                if tok == 0:
                    return line
                lo += 1
                hi = lo
            while hi < end:  # the token's end, and its first colon
                t = classes[data[hi]]
                if t != _PLAIN:
                    if t == _END:
                        break
                    if t == _BAD:
                        return line
                    if t == _UTF8:
                        ascii = False
                    elif colon < 0:
                        colon = hi
                hi += 1
            pos = hi
            if bar:  # "|name" or "|name:weight" (the weight is ignored)
                name_end = colon if colon >= 0 else hi
                found = -1
                for k in range(n_spaces):
                    a = spaces[k, 0]
                    if spaces[k, 1] - a == name_end - lo:
                        same = True
                        for j in range(name_end - lo):
                            if data[a + j] != data[lo + j]:
                                same = False
                                break
                        if same:
                            found = k
                            break
                if found < 0:
                    if n_spaces >= spaces.shape[0]:
                        return line
                    spaces[n_spaces, 0] = lo
                    spaces[n_spaces, 1] = name_end
                    found = n_spaces
                    n_spaces += 1
                space = found
            elif tok == 0:
                ok, labels[events] = _label(data, lo, hi, ones, one_lengths, zeros, zero_lengths)
                if not ok:
                    return line
            elif space < 0:  # the importance weight, a tag ("'...") or an ignored number
                if tok == 1 and data[lo] != 39:
                    ok, w = _parse_number(data, lo, hi, pow10)
                    if not ok or w < 0:
                        return line
                    weights[events] = w
                    weighted = 1
            elif not (libsvm and hi - lo > 4 and data[lo] == 113 and data[lo + 1] == 105
                      and data[lo + 2] == 100 and data[lo + 3] == 58):  # "qid:" is skipped
                name_end = colon if colon >= 0 else hi
                if name_end == lo:
                    return line
                value = 1.0
                if colon >= 0:
                    if not (hi == colon + 2 and data[colon + 1] == 49):  # ":1"
                        ok, value = _parse_number(data, colon + 1, hi, pow10)
                        if not ok:
                            return line
                if ascii:
                    h = hash_ascii(data, lo, name_end)
                else:
                    ok, h = hash_utf8(data, lo, name_end)
                    if not ok:
                        return line
                if value == 1.0:
                    cat_space[n_cat] = space
                    cat_row[n_cat] = events
                    cat_hash[n_cat] = h
                    n_cat += 1
                else:
                    k = np.int64(splitmix(h ^ np.uint64(space)) & np.uint64(mask))
                    while True:
                        f = slots[k]
                        if f < 0:
                            if n_fields >= field_space.size:
                                return line
                            f = n_fields
                            n_fields += 1
                            slots[k] = f
                            field_space[f] = space
                            field_span[f, 0] = lo
                            field_span[f, 1] = name_end
                            field_hash[f] = h
                            break
                        if field_hash[f] == h and field_space[f] == space:
                            a = field_span[f, 0]
                            if field_span[f, 1] - a == name_end - lo and \
                                    same_bytes(data, a, lo, name_end - lo):
                                break
                        k = (k + 1) & mask
                    num_field[n_num] = f
                    num_row[n_num] = events
                    num_value[n_num] = value
                    n_num += 1
            tok += 1
        if tok > 0:
            events += 1
    counts[_EVENTS] = events
    counts[_CATS] = n_cat
    counts[_NUMS] = n_num
    counts[_SPACES] = n_spaces
    counts[_FIELDS] = n_fields
    counts[_WEIGHTED] = weighted
    return -1
