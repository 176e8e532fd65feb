"""A batch's values event by event: the form a reader that reads line by line has them in.

Why beside the columns: the learner takes a batch event by event (`worker.models.kernel`), and a
reader that scans a file line by line (`worker.sources.delimited_scan`) meets the values in that
order. Turning them into columns, one per field, and the featurized columns back into events
costs two transposes of every value, more than the featurizing itself. A batch that carries
`Entries` is featurized straight from them (`Featurizer`), keeping event order, and its
columns are made only if something asks for them (`common.features.batch.EntryColumns`):
conforming a value to another kind, crossing fields, a test.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# what featurizing does with a field's entries (`common.features.Featurizer`'s plan, carried
# out by the worker's compiled `worker.models.kernel.mix_entries`): the word as it is (a
# string's hash, an integer id), the log2 bucket or the rounded value of a number
# (`common.features.Transform` "log2" and "categorical"), or nothing (a field the spec leaves out)
KEEP, LOG2, ROUND, DROP = 0, 1, 2, -1


@dataclass
class Entries:
    """Event i's values are entries ``offsets[i]:offsets[i + 1]``, in the order the event has
    them; entry e is a value of field ``names[fields[e]]``. `words` holds a categorical value
    (a string's hash, `common.hashing.hash_strings`, or an integer id) as it is and a numeric
    one as its float64 bits (``words.view(np.float64)`` reads it)."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # NUMERIC or CATEGORICAL, one per name
    offsets: np.ndarray  # int64, events + 1, from 0
    fields: np.ndarray  # int16
    words: np.ndarray  # uint64

    @property
    def n(self) -> int:
        return self.offsets.size - 1

    def slice(self, start: int, stop: int) -> "Entries":
        """Events [start, stop), sharing the values (only the offsets are new)."""
        offsets = self.offsets[start:stop + 1]
        lo, hi = int(offsets[0]), int(offsets[-1])
        return Entries(self.names, self.kinds, offsets - lo, self.fields[lo:hi],
                       self.words[lo:hi])


def concat_entries(parts: Sequence[Entries]) -> Entries | None:
    """Parts end to end, or None when they do not name the same fields alike."""
    first = parts[0]
    if any(p.names != first.names or p.kinds != first.kinds for p in parts):
        return None
    offsets = [first.offsets]
    base = int(first.offsets[-1])
    for p in parts[1:]:
        offsets.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
    return Entries(first.names, first.kinds, np.concatenate(offsets),
                   np.concatenate([p.fields for p in parts]),
                   np.concatenate([p.words for p in parts]))
