"""A trainer's part in declaring a model's input (`common.declaration`): say what the source
knows, learn what the cluster keeps.

A model the spec leaves open is declared by its first trainer whose source knows its fields:
the source's schema (field -> "num" | "cat" | "id") and, for a built-in data set, the model
recommended for it (MovieLens: its fields, crosses and FTRL settings). A source that knows
nothing (JSON lines, VW text, a synthetic stream) only asks, and learns whatever an earlier
source declared, so every trainer of a model featurizes alike.
"""
from __future__ import annotations

import dataclasses
import logging

from common.config import ClusterSpec, OptimizerSpec
from common.declaration import Declaration, is_open
from worker.sources.delimited import DelimitedSource

log = logging.getLogger("deltaps.worker")


def field_kinds(source) -> dict[str, str] | None:
    """What `source` knows of its fields' kinds, or None if nothing (a value's kind is then
    only its JSON type). A delimited file's schema says it column by column."""
    kinds = getattr(source, "field_kinds", None)
    if callable(kinds):
        return kinds()
    if isinstance(source, DelimitedSource):
        return {name: kind for name, kind in source.schema if kind in ("num", "cat")}
    return None


def proposal(source, spec: ClusterSpec, model: str) -> Declaration | None:
    """The declaration `source` offers for the open `model`: its recommended model if it has
    one, else its schema with the model's own (open) features. An optimizer the spec sets
    (anything but the defaults) is the user's choice and stays, as does a deep model's."""
    kinds = field_kinds(source)
    if kinds is None:
        return None
    base = spec.model(model)
    recommend = getattr(source, "recommended", None)
    offered = recommend() if callable(recommend) else None
    name = str(getattr(source, "name", "") or type(source).__name__)
    if offered is None:
        offered = Declaration(name, dict(kinds), bias=base.bias,
                              optimizer=dataclasses.asdict(base.optimizer))
    elif base.optimizer != OptimizerSpec() or base.kind != "linear":
        # a deep model keeps its own optimizer: a data set's recommendation is a linear one's
        offered = dataclasses.replace(offered, optimizer=dataclasses.asdict(base.optimizer))
    return offered


def agree(client, spec: ClusterSpec, model: str, source) -> Declaration | None:
    """Offer the source's declaration of `model` (or only ask, if it knows none) and return
    the one the cluster keeps; None for a model the spec specifies, or one running undeclared
    (trained before any declaration: it keeps its spec's features). Raises
    `DeclarationConflict` if the model was declared otherwise."""
    if not is_open(spec.model(model)):
        return None
    offered = proposal(source, spec, model)
    kept = client.declare(model, offered.to_dict() if offered else {})
    if offered is not None and not kept:
        log.warning("model %s was trained before its input was declared: it keeps learning "
                    "every field as the events type it (%s's schema is not used)", model,
                    offered.source)
    return Declaration.from_dict(kept) if kept else None
