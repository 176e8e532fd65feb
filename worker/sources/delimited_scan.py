"""A compiled scan of a block of TSV/CSV lines: labels, numbers and string hashes in one pass,
line by line as the scan meets them (`Scanned`, the form `common.features.entries` keeps).

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
(`string_hash`), so a file and a predict request give the same ids. The compiled code is in
`scan_kernel`; `compiled` runs it from the prebuilt module when there is one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.sources import compiled
from worker.sources.fields import CAT, LABEL, NUM, ONE_LABELS, SKIP, ZERO_LABELS

KIND_CODES = {"skip": SKIP, "label": LABEL, "num": NUM, "cat": CAT}
POW10 = np.array([10.0 ** k for k in range(23)])


def _label_table(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(s) for s in labels)
    table = np.zeros((len(labels), width), np.uint8)
    for i, s in enumerate(labels):
        table[i, :len(s)] = np.frombuffer(s.encode(), np.uint8)
    return table, np.array([len(s) for s in labels], np.int64)


ONES, ONE_LENGTHS = _label_table(ONE_LABELS)
ZEROS, ZERO_LENGTHS = _label_table(ZERO_LABELS)


@dataclass
class Scanned:
    """A clean block's values, line by line (`common.features.entries.Entries`): line i's are
    entries ``offsets[i]:offsets[i + 1]``, entry e a value of the scanner's value field
    ``fields[e]`` (`BlockScanner.values`), a categorical one's string hash or a numeric one's
    float64 bits in ``words[e]``."""

    labels: np.ndarray  # float32
    offsets: np.ndarray  # int64, lines + 1
    fields: np.ndarray  # int16
    words: np.ndarray  # uint64


class BlockScanner:
    """The scan for one schema: its kinds and value fields worked out once; `scan` returns
    the block's values, or None when the block must go through the full reader."""

    def __init__(self, kinds: list[str], delimiter: str):
        self.kinds = np.array([KIND_CODES[k] for k in kinds], np.int64)
        # the value fields (numeric and categorical columns), numbered in schema order
        self.values = [j for j, k in enumerate(kinds) if k in ("num", "cat")]
        self.slots = np.zeros(len(kinds), np.int64)
        for number, j in enumerate(self.values):
            self.slots[j] = number
        self.delimiter = ord(delimiter)
        # the bytes that end a field, as a 128-bit set (`scan_block`); a CSV block with a
        # quote is not taken
        ends = {self.delimiter, 10, 13} | ({34} if delimiter == "," else set())
        bits = sum(1 << c for c in ends)
        self.stops = (bits & (2**64 - 1), bits >> 64)

    def scan(self, block: bytes, lines: int) -> Scanned | None:
        """The block's values (`scan_kernel.scan_block`), or None."""
        data = np.frombuffer(block, np.uint8)
        labels = np.zeros(lines, np.float32)
        words = np.empty(lines * len(self.values), np.uint64)  # lazily backed: what is used
        fields = np.empty(words.size, np.int16)
        offsets = np.zeros(lines + 1, np.int64)
        first_bad = compiled.scan_block(data, lines, self.delimiter, *self.stops, self.kinds,
                                        self.slots, POW10, ONES, ONE_LENGTHS, ZEROS,
                                        ZERO_LENGTHS, labels, words, words.view(np.float64),
                                        fields, offsets)
        if first_bad >= 0:
            return None
        used = int(offsets[-1])
        return Scanned(labels, offsets, fields[:used], words[:used])
