"""Stable 64-bit hashing of feature values, vectorized over whole columns.

Python's `hash()` is salted per process, so it can never name a feature. These functions give
the same 64-bit id for the same input on every process and machine:

- integers: ``splitmix64(value ^ seed)``
- strings: code points packed two per 64-bit word, folded word by word with
  ``h = splitmix64(h ^ word)`` from ``splitmix64(length ^ seed)`` (see `hash_strings`).

The seed defaults to a fixed tag; the featurizer passes the hash of the field name, so a value
and its field become one id in a single pass.

Every function takes and returns numpy arrays; the only Python loop is over the 8-byte words of
the longest string in a column, never over rows.
"""
from __future__ import annotations

import numpy as np

_U64 = np.uint64
GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
INT_TAG = _U64(0x2545F4914F6CDD1D)
STR_TAG = _U64(0x5851F42D4C957F2D)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-mixing map uint64 -> uint64."""
    z = np.asarray(x, dtype=_U64) + GOLDEN
    z = (z ^ (z >> _U64(30))) * _M1
    z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


_K = _U64(0xD6E8FEB86659FD93)  # odd: multiplying by it is a bijection on uint64


def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Order-dependent combination of two hashes (crosses): one mix of ``a * K ^ b``."""
    return splitmix64((np.asarray(a, dtype=_U64) * _K) ^ np.asarray(b, dtype=_U64))


def hash_ints(values: np.ndarray, seed=INT_TAG) -> np.ndarray:
    """Hash integer values (any integer dtype; negatives are taken two's-complement).

    `seed` may be one uint64 or one per value.
    """
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise TypeError(f"hash_ints needs integers, got dtype {v.dtype}")
    return splitmix64(v.astype(np.int64, copy=False).view(_U64) ^ np.asarray(seed, dtype=_U64))


def hash_strings(values, seed=STR_TAG) -> np.ndarray:
    """Hash a column of strings to uint64, vectorized.

    The canonical form is the string's Unicode code points (as numpy stores a ``U`` array:
    UTF-32), packed two per little-endian 64-bit word; the seed mixes in the length in code
    points. Only words inside each string are folded, so a string hashes the same whatever the
    width of the column it sits in. Bytes are decoded as UTF-8 first. Like numpy strings,
    trailing NUL characters are not significant.
    """
    arr = np.asarray(values)
    arr = arr.reshape(arr.size)
    n = arr.shape[0]
    if n == 0:
        return np.zeros(0, dtype=_U64)
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8")
    elif arr.dtype.kind != "U":
        arr = arr.astype(str)
    if arr.dtype.itemsize == 0:  # a column of empty strings only
        arr = arr.astype("U1")
    chars = arr.dtype.itemsize // 4
    words = -(-chars // 2)
    codepoints = np.zeros((n, words * 2), dtype="<u4")
    codepoints[:, :chars] = np.ascontiguousarray(arr).view("<u4").reshape(n, chars)
    cols = codepoints.view("<u8")
    lengths = np.char.str_len(arr).astype(_U64)
    h = splitmix64(lengths ^ np.asarray(seed, dtype=_U64))
    for j in range(words):
        inside = lengths > _U64(2 * j)
        h = np.where(inside, splitmix64(h ^ cols[:, j].astype(_U64)), h)
    return h


def hash_string(value: str) -> int:
    """Hash one string; the same as `hash_strings([value])[0]`."""
    return int(hash_strings(np.array([value]))[0])
