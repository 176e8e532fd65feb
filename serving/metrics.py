"""A replica's own Prometheus families, read at scrape time from what the replica keeps.

Per model: the version it answers with (the sum of the per-shard sequence numbers, as the
REST status reports it, and each shard's number), staleness, readiness, resyncs and updates
applied; the prediction cache's hits and misses; instances scored. Requests and predict
latency are the families every node has (`common.telemetry`).
"""
from __future__ import annotations

from typing import Iterable

from common.telemetry import CounterMetricFamily, GaugeMetricFamily


def watch_replica(node) -> None:
    """Register the families of `node` (a `ReplicaNode`, which calls this as it is built) on
    `node.metrics`."""

    def collect() -> Iterable:
        version = GaugeMetricFamily("deltaps_replica_model_version", "Version the replica "
                                    "answers with: the sum of its per-shard sequence numbers.",
                                    labels=["model"])
        shard_seq = GaugeMetricFamily("deltaps_replica_shard_sequence", "Sequence number of the "
                                      "last update fully applied, per model and shard.",
                                      labels=["model", "shard"])
        stale = GaugeMetricFamily("deltaps_replica_staleness_seconds", "Time since every shard "
                                  "of the model was last confirmed current (update or "
                                  "heartbeat).", labels=["model"])
        ready = GaugeMetricFamily("deltaps_replica_ready", "1 while the model answers reads "
                                  "(every shard in sync), else 0.", labels=["model"])
        resyncs = CounterMetricFamily("deltaps_replica_resyncs", "Times a shard of the model "
                                      "fell out of sync (gap, missed tail, new epoch) and was "
                                      "re-fetched from a snapshot.", labels=["model"])
        applied = CounterMetricFamily("deltaps_replica_updates_applied", "Update batches "
                                      "applied, per model.", labels=["model"])
        for name, model in node.models.items():
            version.add_metric([name], sum(max(0, v) for v in model.version))
            for k, seq in enumerate(model.version):
                shard_seq.add_metric([name, str(k)], seq)
            stale.add_metric([name], model.staleness_ms() / 1000.0)
            ready.add_metric([name], 1.0 if model.ready else 0.0)
            resyncs.add_metric([name], sum(s.gaps for s in model.shards))
            applied.add_metric([name], model.updates_applied)
        yield from (version, shard_seq, stale, ready, resyncs, applied)
        cache = node.cache
        yield CounterMetricFamily("deltaps_prediction_cache_hits", "Predict requests answered "
                                  "from the prediction cache.", value=cache.hits)
        yield CounterMetricFamily("deltaps_prediction_cache_misses", "Predict requests the "
                                  "cache was asked about and did not hold.", value=cache.misses)
        yield GaugeMetricFamily("deltaps_prediction_cache_entries", "Answers the prediction "
                                "cache holds.", value=len(cache.entries))
        yield CounterMetricFamily("deltaps_predict_instances", "Instances scored in answered "
                                  "predict requests.", value=node.instances)
    node.metrics.add_collector(collect)
