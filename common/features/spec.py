"""What a model sees of an event: its fields, numeric transforms and crosses.

A spec is plain data, read from the cluster config (`ClusterSpec.feature_spec`), so a worker
and a replica of one model build identical featurizers from it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Transform:
    """How a numeric field becomes a categorical bucket.

    Why: a linear model over hashed ids cannot use a number as an amount, so a number is mapped
    to a bucket id, and nearby values share a weight. kind: "log2" buckets by
    sign(x)*floor(log2(1+|x|)), taken exactly from the binary exponent of 1+|x| (so compiled
    code gets the same bucket, `worker.models.kernel.mix_entries`, whatever its log2
    rounds); "buckets" by the index of the first boundary above x; "categorical" keeps
    integer values as ids (e.g. user ids sent as numbers).
    """

    kind: str = "log2"
    boundaries: Sequence[float] = ()

    def bucketize(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if self.kind == "log2":
            exponent = np.frexp(1.0 + np.abs(x))[1].astype(np.int64) - 1  # 1 + |x| >= 1
            return np.where(x < 0, -exponent, exponent)
        if self.kind == "buckets":
            return np.searchsorted(np.asarray(self.boundaries, dtype=np.float64), x, side="right")
        if self.kind == "categorical":
            return np.round(x).astype(np.int64)
        raise ValueError(f"unknown transform kind {self.kind!r}")


@dataclass
class FeatureSpec:
    """Which fields a model reads, their numeric transforms, and which fields it crosses.

    One object shared by the worker that trains a model and the replicas that serve it, so the
    ids a prediction looks up are the ids training wrote.
    """

    fields: Sequence[str] = ()  # empty: every field an event has
    transforms: Mapping[str, Transform] = field(default_factory=dict)
    crosses: Sequence[Sequence[str]] = ()
    bias: bool = True
