"""Helpers shared by the event source tests: write a file, read a source out, compare events."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.features import Batch
from common.hashing import hash_strings


def string_ids(values) -> list[int]:
    """Categorical string values as the featurizer sees them: their string hashes. A reader
    may hand over strings or, having hashed them in its buffers, the hashes themselves."""
    arr = np.asarray(values)
    return (hash_strings(arr) if arr.dtype.kind in "US" else arr.astype(np.uint64)).tolist()


def events_of(batch: Batch, strings_as_hashes: bool = False) -> list[dict]:
    """Per-event view of a batch, for comparing batches however they were cut; with
    `strings_as_hashes`, categorical strings as their hashes (to compare a reader that hashes
    in its buffers with one that does not)."""
    out = [{"label": float(batch.labels[i])} for i in range(batch.n)]
    for name, col in batch.columns.items():
        values = col.values.tolist()
        if strings_as_hashes and col.values.dtype.kind in "US":
            values = string_ids(col.values)
        for row, value in zip(col.rows.tolist(), values):
            out[row].setdefault(name, []).append(value)
    return out


def read_all(source, sizes) -> list[Batch]:
    """Read with the given batch sizes (cycled) until the source is exhausted."""
    batches, k = [], 0
    while (batch := source.read(sizes[k % len(sizes)])) is not None:
        batches.append(batch)
        k += 1
    return batches


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tiny_movielens(directory: Path) -> Path:
    """A MovieLens 100k directory of four ratings; user 3 is not in u.user, movie 11 has no
    release date and no genres."""
    directory.mkdir()
    write(directory / "u.data", "1\t10\t5\t300\n2\t11\t3\t100\n1\t11\t4\t200\n3\t10\t1\t100\n")
    write(directory / "u.user", "1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    genres = "".join(f"G{i}|{i}\n" for i in range(19)) + "\n"
    write(directory / "u.genre", genres)
    flags10 = ["0"] * 19
    flags10[2] = flags10[7] = "1"
    flags11 = ["0"] * 19
    (directory / "u.item").write_bytes(
        ("10|Amélie (2001)|01-Jan-2001||http://x|" + "|".join(flags10) + "\n"
         "11|Unknown||||" + "|".join(flags11) + "\n").encode("latin-1"))
    return directory
