"""Writing the synthetic stream to TSV or JSON lines files.

Why: other tools (Vowpal Wabbit, `deltaps train` on a file, the parsers' own tests) must see
exactly the events the in-memory stream gives, in a format they read.
"""
from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np

from common.features import NUMERIC, Batch
from worker.sources.planted import CATEGORICAL_FIELDS, FIELDS
from worker.sources.synthetic import SyntheticStream


def write_synthetic(path: str | Path, events: int, seed: int = 0, fmt: str = "tsv",
                    **stream_opts) -> Path:
    """Write a synthetic stream to a file so other tools (e.g. Vowpal Wabbit) see the same events.

    fmt "tsv": Criteo layout (label, i1..i13, c1..c26; empty field = missing; no header), read
    back with `CRITEO_SCHEMA`. fmt "jsonl": one ``{"label", "features"}`` object per line.
    Categorical ids are written as decimal strings in both, so a file featurizes the same
    whichever format it is in (but not the same as the in-memory int64 ids).
    """
    if fmt not in ("tsv", "jsonl"):
        raise ValueError(f"fmt must be 'tsv' or 'jsonl', got {fmt!r}")
    path = Path(path)
    stream = SyntheticStream(events, seed, **stream_opts)
    with open(path, "w", encoding="utf-8") as out:
        while (batch := stream.read(stream.chunk_size)) is not None:
            _write_batch(out, batch, fmt)
    return path


def _text_columns(batch: Batch) -> list[np.ndarray]:
    """Each field of FIELDS as a dense array of strings, "" where missing."""
    out = []
    for name in FIELDS:
        col = batch.columns[name]
        text = np.full(batch.n, "", dtype=object)
        values = col.values.astype(np.int64) if col.kind == NUMERIC else col.values
        text[col.rows] = values.astype(str)
        out.append(text)
    return out


def _write_batch(out: IO[str], batch: Batch, fmt: str) -> None:
    labels = batch.labels.astype(np.int64).astype(str)
    columns = _text_columns(batch)
    if fmt == "tsv":
        out.writelines("\t".join(row) + "\n" for row in zip(labels, *columns))
        return
    fragments = []
    for name, text in zip(FIELDS, columns):
        quoted = f'"{name}": "' if name in CATEGORICAL_FIELDS else f'"{name}": '
        close = '"' if name in CATEGORICAL_FIELDS else ""
        frag = np.where(text == "", "", np.char.add(np.char.add(quoted, text.astype(str)), close))
        fragments.append(frag.astype(object))
    heads = np.char.add(np.char.add('{"label": ', labels), ', "features": {')
    out.writelines(head + ", ".join(f for f in parts if f) + "}}\n"
                   for head, *parts in zip(heads, *fragments))
