"""A model's declared input: the schema of its fields and the features it learns, kept by the
cluster with the model.

Why: a model left open in the spec (no fields, no crosses, no transforms: the default) learns
whatever its first source gives it. The source knows things an event dict does not: MovieLens'
user ids are ids, not amounts, and it comes with a model that learns it well. A replica that
only sees `{"user": 196}` cannot know either, so without a declaration it would bucket 196 as an
amount and serve features the model never learned. A declaration carries both (the schema and
the recommended features and optimizer) from the first trainer to the shards, which keep it
with the model's state, and from the shards to the replicas, which featurize reads with it.

A declaration is plain data (`to_dict` / `from_dict`, checked field by field, so a bad one from
the wire is refused with its fault named). Schema kinds: "num" (an amount: bucketed by the
field's transform), "cat" (a categorical string), "id" (a categorical integer). `conform` makes
a batch's columns the kinds the schema says, so a JSON number sent for an "id" field gets the
id the worker learned from the source's integer column.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.config import ClusterSpec, ModelSpec, OPTIMIZERS, OptimizerSpec
from common.errors import InvalidValue
from common.features import FeatureSpec, Transform

SCHEMA_KINDS = ("num", "cat", "id")
TRANSFORM_KINDS = ("log2", "buckets", "categorical")


@dataclass(frozen=True)
class Declaration:
    """What a model reads and learns, as its first trainer's source declared it.

    `fields`, `crosses`, `transforms` (per field: {"kind", "boundaries"}) and `bias` are the
    model's `FeatureSpec`; `optimizer` its `OptimizerSpec` fields. `bits` is not here: a shard
    sizes its stores when it starts, so the spec's bits stay the model's.
    """

    source: str  # what declared it ("movielens-100k", "events.tsv"): shown by `deltaps status`
    schema: dict[str, str] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    crosses: tuple[tuple[str, ...], ...] = ()
    transforms: dict[str, dict] = field(default_factory=dict)
    bias: bool = True
    optimizer: dict = field(default_factory=lambda: dataclasses.asdict(OptimizerSpec()))

    # --- what it means --------------------------------------------------------------------

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(self.fields, {f: Transform(t["kind"], tuple(t["boundaries"]))
                                         for f, t in self.transforms.items()},
                           self.crosses, self.bias)

    def model_spec(self, base: ModelSpec) -> ModelSpec:
        """`base` (the spec's model) learning what this declares: its name and bits, these
        fields and this optimizer (`feature_spec` is its featurization; named transforms of
        the cluster spec no longer apply to it)."""
        return dataclasses.replace(base, fields=list(self.fields),
                                   crosses=[list(c) for c in self.crosses], transforms=[],
                                   bias=self.bias, optimizer=OptimizerSpec(**self.optimizer))

    def summary(self) -> dict:
        """What `deltaps status` shows of it."""
        return {"source": self.source, "fields": list(self.fields) or "every field",
                "crosses": [" x ".join(c) for c in self.crosses],
                "optimizer": {k: self.optimizer[k] for k in ("name", "learning_rate", "l1", "l2")}}

    # --- as data --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"source": self.source, "schema": dict(self.schema), "fields": list(self.fields),
                "crosses": [list(c) for c in self.crosses],
                "transforms": {f: {"kind": t["kind"], "boundaries": list(t["boundaries"])}
                               for f, t in self.transforms.items()},
                "bias": self.bias, "optimizer": dict(self.optimizer)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Declaration":
        """Check a declaration read from the wire or disk; raises InvalidValue naming the
        first thing wrong with it."""
        def fail(what: str):
            raise InvalidValue(f"declaration: {what}")

        if not isinstance(d, Mapping):
            fail("must be a map")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            fail(f"unknown key(s) {unknown}")
        if not isinstance(d.get("source"), str):
            fail("'source' must be a string")
        schema = d.get("schema", {})
        if not isinstance(schema, Mapping) or not all(
                isinstance(k, str) and v in SCHEMA_KINDS for k, v in schema.items()):
            fail(f"'schema' must map field names to one of {SCHEMA_KINDS}")
        fields = d.get("fields", [])
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            fail("'fields' must be a list of field names")
        crosses = d.get("crosses", [])
        if not isinstance(crosses, list) or not all(
                isinstance(c, list) and len(c) >= 2 and all(isinstance(f, str) for f in c)
                for c in crosses):
            fail("'crosses' must be a list of lists of two or more field names")
        transforms = d.get("transforms", {})
        if not isinstance(transforms, Mapping):
            fail("'transforms' must map field names to {kind, boundaries}")
        for name, t in transforms.items():
            if not isinstance(t, Mapping) or t.get("kind") not in TRANSFORM_KINDS:
                fail(f"transform of {name!r} must have a kind among {TRANSFORM_KINDS}")
            bounds = t.get("boundaries", [])
            if not isinstance(bounds, list) or not all(
                    isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) \
                    or bounds != sorted(bounds):
                fail(f"boundaries of {name!r} must be a sorted list of numbers")
        if not isinstance(d.get("bias", True), bool):
            fail("'bias' must be true or false")
        optimizer = d.get("optimizer", {})
        known = {f.name: f.default for f in dataclasses.fields(OptimizerSpec)}
        if not isinstance(optimizer, Mapping) or set(optimizer) - set(known):
            fail(f"'optimizer' must be a map with keys among {sorted(known)}")
        opt = {**known, **optimizer}
        if opt["name"] not in OPTIMIZERS or not all(
                isinstance(opt[k], (int, float)) and not isinstance(opt[k], bool)
                for k in known if k != "name"):
            fail(f"optimizer name must be one of {OPTIMIZERS}, its settings numbers")
        return cls(d["source"], dict(schema), tuple(fields), tuple(tuple(c) for c in crosses),
                   {f: {"kind": t["kind"], "boundaries": [float(b) for b in
                                                          t.get("boundaries", [])]}
                    for f, t in transforms.items()},
                   d.get("bias", True), {k: (v if k == "name" else float(v))
                                         for k, v in opt.items()})

    @classmethod
    def of_model(cls, spec: ClusterSpec, model: str, source: str,
                 schema: Mapping[str, str]) -> "Declaration":
        """The declaration of a model as a cluster spec writes it (a data set's recommended
        model is kept as spec TOML, the form a user would copy)."""
        m = spec.model(model)
        transforms = {}
        for tname in m.transforms:
            t = spec.transforms[tname]
            transforms[t.get("field", tname)] = {"kind": t.get("kind", "log2"),
                                                 "boundaries": list(t.get("boundaries", ()))}
        return cls.from_dict({"source": source, "schema": dict(schema), "fields": m.fields,
                              "crosses": m.crosses, "transforms": transforms, "bias": m.bias,
                              "optimizer": dataclasses.asdict(m.optimizer)})


def is_open(model: ModelSpec) -> bool:
    """Whether the spec leaves the model's features to its first source to declare: no fields,
    crosses or transforms named (the default model)."""
    return not (model.fields or model.crosses or model.transforms)


def differences(a: Declaration, b: Declaration) -> list[str]:
    """Names of the parts where two declarations differ (for the error refusing one)."""
    da, db = a.to_dict(), b.to_dict()
    return [k for k in da if k != "source" and da[k] != db[k]]
