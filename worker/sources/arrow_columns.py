"""Arrow columns (what pyarrow's CSV reader gives) -> the numpy arrays a `Column` holds.

Why its own module: this is the part of reading delimited text that must stay vectorized. A
string column is turned into a numpy unicode array straight from its Arrow buffers (offsets
and data bytes), with one gather of a byte window per column, never a Python object per value;
numbers and labels come from Arrow's own kernels. The featurizer then hashes the unicode array
exactly as it hashes the same strings sent by a client, so a file and a predict request give
the same ids.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.hashing import hash_strings
from worker.sources.fields import ONE_LABELS, ZERO_LABELS, byte_window
from worker.sources.compiled import hash_values

# A decimal number as text (what a "num" column must hold); inf and nan are refused later.
NUMBER_PATTERN = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_ONES = pa.array([s.encode() for s in ONE_LABELS], pa.binary())
_ZEROS = pa.array([s.encode() for s in ZERO_LABELS], pa.binary())


def single(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous Arrow array of a column (a table read from one block has one chunk)."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def offsets_and_data(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The value offsets (n + 1, int64) and data bytes of a binary or string array."""
    arr = single(arr)
    _, offsets_buf, data_buf = arr.buffers()[:3]
    width = 8 if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type) else 4
    offsets = np.frombuffer(offsets_buf, f"<i{width}", len(arr) + 1, arr.offset * width)
    data = (np.frombuffer(data_buf, np.uint8) if data_buf is not None and data_buf.size
            else np.zeros(0, np.uint8))
    return offsets.astype(np.int64), data


def lengths_of(arr: pa.Array) -> np.ndarray:
    """Byte length of each value (0 for an empty or null value)."""
    offsets, _ = offsets_and_data(arr)
    return np.diff(offsets)


def strings_of(arr: pa.Array, take: np.ndarray | None = None) -> np.ndarray:
    """The values (at positions `take`, or all) as a numpy unicode array, from the buffers.

    ASCII columns (all of Criteo) need no decoding: a byte is its code point, so Arrow pads
    every value with NULs to the longest one (in C++), the padded data bytes are a (values,
    width) matrix, and widening it to 4 bytes a character is the unicode array (numpy
    ignores trailing NULs, as `hash_strings` does). Other columns are decoded as UTF-8
    (invalid bytes replaced) from a gathered bytes matrix.
    """
    arr = single(arr)
    offsets, data = offsets_and_data(arr)
    n = len(arr)
    width = max(int(np.diff(offsets).max(initial=0)), 1)
    m = n if take is None else take.size
    if n == 0 or m == 0:
        return np.zeros(m, "<U1")
    if int(data.max(initial=0)) < 128:
        text = pc.cast(arr, pa.string(), safe=False)
        if text.null_count:
            text = pc.fill_null(text, "")
        padded_offsets, padded = offsets_and_data(
            pc.utf8_rpad(text, width, padding="\x00"))
        start = int(padded_offsets[0])
        codes = padded[start:start + n * width].reshape(n, width)
        if take is not None:
            codes = codes[take]
        return codes.astype("<u4").view(f"<U{width}").reshape(m)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if take is not None:
        starts, lengths = starts[take], lengths[take]
    codes = byte_window(data, width)[np.minimum(starts, data.size - 1)]
    codes = codes * (np.arange(width) < lengths[:, None])
    raw = np.ascontiguousarray(codes).view(f"S{width}").reshape(m)
    return np.char.decode(raw, "utf-8", "replace")


def hashes_of(arr: pa.Array, take: np.ndarray) -> np.ndarray:
    """`hash_strings` of the values at positions `take`, hashed from the Arrow buffers
    (`string_hash`); a column holding malformed UTF-8 is decoded with replacement first, as
    `strings_of` does."""
    offsets, data = offsets_and_data(arr)
    out = np.empty(take.size, np.uint64)
    if hash_values(offsets, data, np.asarray(take, np.int64), out) >= 0:
        return hash_strings(strings_of(arr, take))
    return out


def labels_of(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """0/1 float32 labels of a binary column, and a mask of values that are not labels."""
    ones = pc.is_in(arr, value_set=_ONES).to_numpy(zero_copy_only=False)
    zeros = pc.is_in(arr, value_set=_ZEROS).to_numpy(zero_copy_only=False)
    return ones.astype(np.float32), ~(ones | zeros)


def numbers_of(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(present, values of the present entries, mask over them of non-finite values) of a
    float64 column whose nulls are missing values."""
    arr = single(arr)
    present = (np.ones(len(arr), bool) if arr.null_count == 0
               else pc.is_valid(arr).to_numpy(zero_copy_only=False))
    values = arr.to_numpy(zero_copy_only=False)
    if arr.null_count:
        values = values[present]
    values = np.asarray(values, np.float64)
    return present, values, ~np.isfinite(values)


def checked_numbers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Like `numbers_of` for a binary column that may hold text that is not a number: also
    returns the mask, over present entries, of values that are not numbers at all."""
    text = pc.cast(single(arr), pa.string(), safe=False)
    present = lengths_of(text) > 0
    is_number = pc.match_substring_regex(text, NUMBER_PATTERN).to_numpy(zero_copy_only=False)
    good = present & is_number
    parsed = pc.cast(pc.utf8_trim_whitespace(pc.if_else(pa.array(good), text, None)),
                     pa.float64())
    values = parsed.to_numpy(zero_copy_only=False)[present]
    not_number = ~is_number[present]
    values = np.where(not_number, np.nan, values)
    return present, values, not_number, ~np.isfinite(values)
