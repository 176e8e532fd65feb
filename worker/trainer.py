"""The training loop: per mini-batch, featurize -> pull -> score -> gradients -> push.

Progressive validation comes for free: each batch is scored with the weights pulled for it,
before its own gradients are pushed. Several trainers may run against the same model at once
(asynchronous, Hogwild-style); shards apply whatever arrives.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np

from common.config import ClusterSpec
from common.features import Batch, Featurizer
from worker.metrics import ProgressiveMetrics
from worker.models.linear import BatchKeys, gradients, predict
from worker.ps_client import PSClient


class Source(Protocol):
    def read(self, max_events: int) -> Batch | None: ...


@dataclass
class Summary:
    model: str
    events: int
    batches: int
    seconds: float
    events_per_s: float
    logloss: float
    auc: float
    malformed: int = 0
    last_seqs: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class Trainer:
    def __init__(self, client: PSClient, spec: ClusterSpec, model: str, batch_size: int = 512):
        self.client = client
        self.model = spec.model(model)
        self.featurizer = Featurizer(spec.feature_spec(model))
        self.batch_size = batch_size
        self.metrics = ProgressiveMetrics()
        self.last_seqs: dict[int, int] = {}

    def step(self, batch: Batch) -> np.ndarray:
        """Train on one batch; returns the progressive predictions made before learning it."""
        features = self.featurizer.featurize(batch)
        keys = BatchKeys.of(features, self.model.bits)
        weights = self.client.pull(self.model.name, keys.slots)
        p = predict(features, keys, weights)
        self.metrics.update(p, batch.labels)
        grads = gradients(features, keys, p, batch.labels, batch.weights)
        self.last_seqs.update(self.client.push(self.model.name, keys.slots, grads))
        return p

    def train(self, source: Source, limit: int | None = None,
              progress: Callable[[dict], None] | None = None,
              progress_every_s: float = 2.0) -> Summary:
        start = last_report = time.monotonic()
        batches = 0
        while limit is None or self.metrics.count < limit:
            want = self.batch_size if limit is None else min(self.batch_size,
                                                              limit - self.metrics.count)
            batch = source.read(want)
            if batch is None:
                break
            if batch.n == 0:
                continue
            self.step(batch)
            batches += 1
            now = time.monotonic()
            if progress and now - last_report >= progress_every_s:
                last_report = now
                progress(self._progress(now - start))
        seconds = time.monotonic() - start
        stats = getattr(source, "stats", None)
        return Summary(self.model.name, self.metrics.count, batches, round(seconds, 3),
                       round(self.metrics.count / seconds, 1) if seconds > 0 else 0.0,
                       self.metrics.logloss, self.metrics.auc(),
                       getattr(stats, "malformed", 0), dict(self.last_seqs))

    def _progress(self, elapsed: float) -> dict:
        return {"events": self.metrics.count,
                "events_per_s": round(self.metrics.count / elapsed, 1) if elapsed else 0.0,
                "logloss": self.metrics.logloss, "recent_logloss": self.metrics.recent_logloss}
