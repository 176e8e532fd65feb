"""Decoding the fields of a delimited chunk into numbers, strings and labels, column by column.

Why its own module: this is the part of parsing that must stay vectorized. A column arrives as
field boundaries in a chunk's bytes (or, for quoted CSV, as strings); everything here works on
whole columns with numpy, so the cost per field is a few array operations shared by the chunk.
"""
from __future__ import annotations

import numpy as np

ONE_LABELS = ("1", "1.0", "+1")
SKIP, LABEL, NUM, CAT = 0, 1, 2, 3  # a field's kind, as the compiled scan (`scan_kernel`) reads it
ZERO_LABELS = ("0", "0.0", "-1", "-1.0")


class Fields:
    """One column of a chunk: a matrix of character codes (UTF-8 bytes or code points), one row
    per line, zero-padded, and each field's length. Empty (length 0) means missing.

    Why a code matrix: numbers and strings are then decoded from it with whole-array
    operations, one pass per character position, instead of Python work per field; and the
    matrix is only gathered (from a byte window over the chunk) when a column is used.
    """

    def __init__(self, lengths: np.ndarray, codes: np.ndarray | None = None,
                 window: np.ndarray | None = None, starts: np.ndarray | None = None):
        self.lengths = lengths
        self._codes, self._window, self._starts = codes, window, starts

    @classmethod
    def from_bytes(cls, window: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> "Fields":
        """Fields [starts, ends) of a chunk; `window[i]` is the chunk's bytes from i on."""
        return cls(ends - starts, window=window, starts=starts)

    @classmethod
    def from_strings(cls, texts: list[str]) -> "Fields":
        arr = np.array(texts, dtype=str)
        if arr.dtype.itemsize == 0:
            arr = arr.astype("U1")
        codes = arr.view(np.uint32).reshape(arr.size, arr.dtype.itemsize // 4)
        return cls(np.char.str_len(arr).astype(np.int64), codes=codes)

    @property
    def codes(self) -> np.ndarray:
        """The (fields, width) code matrix, zero past each field's end; gathered on first use."""
        if self._codes is None:
            width = max(int(self.lengths.max(initial=0)), 1)
            rows = self._window[:, :width][self._starts]
            self._codes = rows * (np.arange(width) < self.lengths[:, None])
        return self._codes

    def take(self, mask: np.ndarray) -> "Fields":
        if self._codes is None:
            return Fields(self.lengths[mask], window=self._window, starts=self._starts[mask])
        return Fields(self.lengths[mask], codes=self._codes[mask])

    def text(self, i: int) -> str:
        """Field i as text (for messages)."""
        row = self.codes[i, :self.lengths[i]]
        if row.dtype == np.uint8:
            return row.tobytes().decode("utf-8", "replace")
        return "".join(map(chr, row.tolist()))

    def strings(self) -> np.ndarray:
        """The fields as a numpy unicode array."""
        m, width = self.codes.shape
        if self.codes.dtype == np.uint32:
            return np.ascontiguousarray(self.codes).view(f"<U{width}").reshape(m)
        if self.codes.max(initial=0) < 128:  # ASCII: a byte is its code point
            return self.codes.astype(np.uint32).view(f"<U{width}").reshape(m)
        raw = np.ascontiguousarray(self.codes).view(f"S{width}").reshape(m)
        return np.char.decode(raw, "utf-8", "replace")

    def numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """Floats of the fields and a mask of fields that are not finite numbers.

        Plain integers (optional sign, up to 15 digits; all of Criteo) are computed from the
        digit codes directly (Horner's rule, one pass per character position); anything else
        goes through numpy's string-to-float parsing.
        """
        codes, lengths = self.codes, self.lengths
        m, width = codes.shape
        if m == 0:
            return np.zeros(0), np.zeros(0, bool)
        digit = codes - codes.dtype.type(48)  # wraps around for codes below '0'
        is_digit = digit <= 9  # zero padding is not a digit
        signed = (codes[:, 0] == 45) | (codes[:, 0] == 43)
        n_digits = is_digit.sum(axis=1)
        if width <= 15 and np.array_equal(n_digits + signed, lengths) and (n_digits > 0).all():
            values = np.zeros(m)
            for k in range(width):
                values = np.where(is_digit[:, k], values * 10 + digit[:, k], values)
            values[codes[:, 0] == 45] *= -1
            return values, np.zeros(m, bool)
        return parse_floats(self.strings())


def byte_window(buf: np.ndarray, width: int) -> np.ndarray:
    """A read-only (len, width) view whose row i is buf[i:i+width] (zero-padded past the end),
    so gathering a field is one row copy instead of per-byte indexing."""
    width = max(width, 1)
    padded = np.concatenate([buf, np.zeros(width, np.uint8)])
    return np.lib.stride_tricks.as_strided(padded, shape=(buf.size, width), strides=(1, 1),
                                           writeable=False)


def parse_floats(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats of a string array and a mask of entries that are not finite numbers."""
    try:
        values = texts.astype(np.float64)
    except ValueError:  # some entry is not a number: find which, on this column only
        values = np.empty(texts.shape[0], np.float64)
        for i, s in enumerate(texts.tolist()):
            try:
                values[i] = float(s)
            except ValueError:
                values[i] = np.nan
    return values, ~np.isfinite(values)


def parse_labels(fields: Fields) -> tuple[np.ndarray, np.ndarray]:
    """0/1 float32 labels of a column, and a mask of entries that are not labels."""
    arr = fields.strings()
    ones = np.isin(arr, ONE_LABELS)
    zeros = np.isin(arr, ZERO_LABELS)
    return ones.astype(np.float32), ~(ones | zeros)
