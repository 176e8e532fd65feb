"""The readers' compiled functions (`scan_kernel.scan_block` and `line_cuts`,
`sparse_kernel.scan_sparse`, `json_kernel.scan_json`, `string_hash.hash_values`), from
the worker's prebuilt module when it is built, else from numba's JIT.

Why: importing numba and setting up its JIT costs a `deltaps train` of a TSV file about a
second before its first batch, though the functions are the same; the prebuilt module
(`worker.models.prebuilt`) holds them compiled from the same source, bit for bit the JIT's.
Its functions take exactly the dtypes they were built for, so arrays are made so first (no
copy when they already are).
"""
from __future__ import annotations

import numpy as np

from worker.models.prebuilt import kernel

_c = np.ascontiguousarray
_functions: dict = {}


def _function(name: str):
    fn = _functions.get(name)
    if fn is None:
        k = kernel()
        if k.prebuilt:
            fn = getattr(k.module, name)
        elif name == "scan_block":
            from worker.sources.scan_kernel import scan_block as fn
        elif name == "scan_sparse":
            from worker.sources.sparse_kernel import scan_sparse as fn
        elif name == "scan_json":
            from worker.sources.json_kernel import scan_json as fn
        elif name == "line_cuts":
            from worker.sources.scan_kernel import line_cuts as fn
        else:
            from worker.sources.string_hash import hash_values as fn
        _functions[name] = fn
    return fn


def scan_block(data, lines, delimiter, stops_low, stops_high, kinds, slots, pow10, ones, one_lengths, zeros,
               zero_lengths, labels, words, numbers, fields, offsets) -> int:
    """`scan_kernel.scan_block`: outputs filled in place; -1, or the first line not taken."""
    for out, dtype in ((labels, np.float32), (words, np.uint64), (numbers, np.float64),
                       (fields, np.int16), (offsets, np.int64)):
        if out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(f"scan output must be a C-contiguous {np.dtype(dtype)} array")
    return _function("scan_block")(
        _c(data, np.uint8), int(lines), int(delimiter), np.uint64(stops_low), np.uint64(stops_high),
        _c(kinds, np.int64), _c(slots, np.int64), _c(pow10, np.float64), _c(ones, np.uint8), _c(one_lengths, np.int64),
        _c(zeros, np.uint8), _c(zero_lengths, np.int64), labels, words, numbers, fields, offsets)


def scan_sparse(data, lines, libsvm, classes, pow10, ones, one_lengths, zeros, zero_lengths, labels,
                weights, cat_space, cat_row, cat_hash, num_field, num_row, num_value, spaces,
                field_space, field_span, field_hash, slots, counts) -> int:
    """`sparse_kernel.scan_sparse`: outputs filled in place; -1, or the first line not taken."""
    outputs = ((labels, np.float32), (weights, np.float32), (cat_space, np.int16),
               (cat_row, np.int64), (cat_hash, np.uint64), (num_field, np.int16),
               (num_row, np.int64), (num_value, np.float64), (spaces, np.int64),
               (field_space, np.int64), (field_span, np.int64), (field_hash, np.uint64),
               (slots, np.int64), (counts, np.int64))
    for out, dtype in outputs:
        if out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(f"scan output must be a C-contiguous {np.dtype(dtype)} array")
    return _function("scan_sparse")(
        _c(data, np.uint8), int(lines), int(libsvm), _c(classes, np.uint8),
        _c(pow10, np.float64), _c(ones, np.uint8), _c(one_lengths, np.int64),
        _c(zeros, np.uint8), _c(zero_lengths, np.int64), labels, weights, cat_space, cat_row,
        cat_hash, num_field, num_row, num_value, spaces, field_space, field_span, field_hash,
        slots, counts)


def scan_json(data, lines, pow10, labels, weights, ent_field, ent_row, ent_num, ent_hash,
              field_span, field_hash, field_kind, field_last, field_size, field_start, slots,
              cat_rows, cat_hash, num_rows, num_values, counts) -> int:
    """`json_kernel.scan_json`: outputs filled in place; -1, or the first line not taken."""
    outputs = ((labels, np.float32), (weights, np.float32), (ent_field, np.int16),
               (ent_row, np.int64), (ent_num, np.float64), (ent_hash, np.uint64),
               (field_span, np.int64), (field_hash, np.uint64), (field_kind, np.int64),
               (field_last, np.int64), (field_size, np.int64), (field_start, np.int64),
               (slots, np.int64), (cat_rows, np.int64), (cat_hash, np.uint64),
               (num_rows, np.int64), (num_values, np.float64), (counts, np.int64))
    for out, dtype in outputs:
        if out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(f"scan output must be a C-contiguous {np.dtype(dtype)} array")
    return _function("scan_json")(
        _c(data, np.uint8), int(lines), _c(pow10, np.float64), labels, weights, ent_field,
        ent_row, ent_num, ent_hash, field_span, field_hash, field_kind, field_last, field_size,
        field_start, slots, cat_rows, cat_hash, num_rows, num_values, counts)


def hash_values(offsets, data, take, out) -> int:
    """`string_hash.hash_values`: `out` filled in place; -1, or the first malformed value."""
    if out.dtype != np.uint64 or not out.flags.c_contiguous:
        raise ValueError("hash output must be a C-contiguous uint64 array")
    return _function("hash_values")(_c(offsets, np.int64), _c(data, np.uint8),
                                    _c(take, np.int64), out)


def line_cuts(data: bytes, carried: int, every: int) -> tuple[list[int], int]:
    """`scan_kernel.line_cuts`: (the cut positions, the newlines in `data`)."""
    cuts = np.empty(len(data) // every + 1, np.int64)
    count = _function("line_cuts")(np.frombuffer(data, np.uint8), int(carried), int(every), cuts)
    return cuts[:(carried + count) // every].tolist(), count
