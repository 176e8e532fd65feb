"""Schemas of delimited files: which column is the label, which are numbers, categories, skipped.

Why a schema at all: a TSV or CSV line carries no types, and the same digits may be a count
(numeric) or an id (categorical); the user says which, on the command line or in a header.
A schema is a list of (name, kind) with kind one of SCHEMA_KINDS and exactly one label.
"""
from __future__ import annotations

from typing import Sequence

SCHEMA_KINDS = ("label", "num", "cat", "skip")
CRITEO_SCHEMA: list[tuple[str, str]] = (
    [("label", "label")] + [(f"i{k}", "num") for k in range(1, 14)]
    + [(f"c{k}", "cat") for k in range(1, 27)])


def parse_schema(text: str) -> list[tuple[str, str]]:
    """Parse ``"label,i1:num,c1:cat,x:skip"`` into [(name, kind)].

    A name without a kind is the label if it is called "label", else categorical.
    """
    schema = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise ValueError(f"empty column in schema {text!r}")
        name, _, kind = item.partition(":")
        name, kind = name.strip(), kind.strip() or ("label" if name.strip() == "label" else "cat")
        if kind not in SCHEMA_KINDS:
            raise ValueError(f"column {name!r}: kind must be one of {SCHEMA_KINDS}, got {kind!r}")
        schema.append((name, kind))
    names = [n for n, _ in schema]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"schema names columns more than once: {dupes}")
    return schema


def as_schema(schema: str | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
    """A schema given as text or as pairs, as a list of (name, kind) pairs (None stays None)."""
    if schema is None or isinstance(schema, str):
        return None if schema is None else parse_schema(schema)
    return [(str(n), str(k)) for n, k in schema]


def schema_from_header(columns: Sequence[str], overrides: Sequence[tuple[str, str]] = ()
                       ) -> list[tuple[str, str]]:
    """Schema for a file whose header names its columns.

    `overrides` give kinds by name; otherwise the first column called "label" is the label
    and every other column is categorical.
    """
    given = dict(overrides)
    unknown = sorted(set(given) - set(columns))
    if unknown:
        raise ValueError(f"schema names columns {unknown} that the header does not have "
                         f"(header: {list(columns)})")
    has_label = "label" in given.values()
    schema, label_seen = [], has_label
    for name in columns:
        kind = given.get(name)
        if kind is None:
            kind = "label" if name == "label" and not label_seen else "cat"
            label_seen = label_seen or kind == "label"
        schema.append((name, kind))
    return schema


def check_schema(schema: Sequence[tuple[str, str]]) -> None:
    """Raise ValueError unless every kind is known and there is exactly one label."""
    bad = [(n, k) for n, k in schema if k not in SCHEMA_KINDS]
    if bad:
        raise ValueError(f"schema kinds must be one of {SCHEMA_KINDS}: {bad}")
    labels = [n for n, k in schema if k == "label"]
    if len(labels) != 1:
        raise ValueError(f"schema needs exactly one label column, has {len(labels)}: {labels}")
