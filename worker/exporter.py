"""A training worker's Prometheus families, read at scrape time from its trainer.

Events learned and the progressive figures `deltaps train` prints (log loss and AUC over the
whole run and over the recent window, `worker.metrics`), so a dashboard shows a long run's
learning curve as it goes. Nothing is counted per event for this: each scrape reads the
numbers the trainer keeps anyway (an AUC costs one pass over the score bins).
"""
from __future__ import annotations

import math
from typing import Iterable

from common.telemetry import CounterMetricFamily, GaugeMetricFamily, NodeMetrics


def watch_trainer(metrics: NodeMetrics, trainer) -> None:
    """Register the families of `trainer` (a `worker.trainer.Trainer`) on `metrics`."""
    model = trainer.model.name

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["model"])
        if not math.isnan(value):  # nothing learned yet: no sample rather than NaN
            family.add_metric([model], value)
        return family

    def collect() -> Iterable:
        m = trainer.metrics
        events = CounterMetricFamily("deltaps_worker_events", "Events learned by this worker.",
                                     labels=["model"])
        events.add_metric([model], m.count)
        yield events
        yield gauge("deltaps_worker_logloss", "Progressive log loss of the whole run (each "
                    "event predicted before it is learned).", m.logloss)
        yield gauge("deltaps_worker_recent_logloss", "Progressive log loss of the recent "
                    "window of events.", m.recent_logloss)
        yield gauge("deltaps_worker_auc", "Progressive AUC of the whole run.", m.auc())
        yield gauge("deltaps_worker_recent_auc", "Progressive AUC of the recent window.",
                    m.recent_auc())
        lag = getattr(trainer.acked, "lag", None)  # a stream source: how far behind it is
        if lag is not None:
            behind = lag()
            for key, doc in (("pending", "Entries delivered to the source's consumer group "
                              "and not yet acknowledged (being learned, or left by a crash)."),
                             ("lag", "Entries of the stream not yet delivered to the "
                              "consumer group.")):
                if key in behind:
                    yield gauge(f"deltaps_worker_source_{key}", doc, behind[key])
    metrics.add_collector(collect)
