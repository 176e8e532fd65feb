"""A shard's own Prometheus families, on top of the request families every node has.

Timed where it happens (hooks the log and the coalescer call): `deltaps_wal_fsync_seconds`
(every fsync of the write-ahead log, group commit or interval thread) and
`deltaps_publish_delay_seconds` (from a model's oldest unpublished change to the update that
carries it: the publish window plus any wait for the loop). Everything else is read at scrape
time from what the shard keeps anyway.
"""
from __future__ import annotations

from typing import Iterable

from common.telemetry import CounterMetricFamily, GaugeMetricFamily

FSYNC_BUCKETS = (50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1,
                 0.25, 0.5, 1.0, 2.5)
DELAY_BUCKETS = (1e-3, 2.5e-3, 5e-3, 7.5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5, 1.0)


def watch_shard(node) -> None:
    """Register the families of `node` (a `ShardNode`, which calls this as it is built) on
    `node.metrics` and hook its log and coalescer."""
    m = node.metrics
    node.state.wal.observe_fsync = m.histogram(
        "deltaps_wal_fsync_seconds", "Time one fsync of the write-ahead log took.",
        FSYNC_BUCKETS).observe
    node.coalescer.observe_delay = m.histogram(
        "deltaps_publish_delay_seconds", "Time from a model's oldest unpublished change to the "
        "update that publishes it.", DELAY_BUCKETS).observe
    node.published_updates = m.counter(
        "deltaps_published_updates", "Update batches published to replicas.")
    node.published_keys = m.counter(
        "deltaps_published_keys", "Slots carried by the published update batches.")

    def collect() -> Iterable:
        seq = GaugeMetricFamily("deltaps_shard_sequence", "Sequence number of the last update "
                                "batch this shard made, per model.", labels=["model"])
        pushes = CounterMetricFamily("deltaps_shard_pushes", "Pushes applied, per model.",
                                     labels=["model"])
        pulls = CounterMetricFamily("deltaps_shard_pulls", "Pulls answered, per model.",
                                    labels=["model"])
        slots = GaugeMetricFamily("deltaps_shard_slots", "Slots this shard holds, per model.",
                                  labels=["model"])
        events = CounterMetricFamily("deltaps_shard_events_learned", "Events learned, per "
                                     "model: each event of a push is counted on one shard, so "
                                     "the sum over shards counts every event once.",
                                     labels=["model"])
        for name, store in node.stores.items():
            events.add_metric([name], node.state.events.get(name, 0))
            seq.add_metric([name], node.coalescer.seq.get(name, 0))
            pushes.add_metric([name], store.pushes)
            pulls.add_metric([name], store.pulls)
            slots.add_metric([name], store.size)
        yield from (seq, pushes, pulls, slots, events)
        yield GaugeMetricFamily("deltaps_wal_lsn", "Position (log sequence number) of the last "
                                "record in the write-ahead log.", value=node.state.last_lsn)
        yield GaugeMetricFamily("deltaps_snapshot_lsn", "Log position the newest snapshot "
                                "covers.", value=node.state.snapshot_lsn)
        yield CounterMetricFamily("deltaps_push_duplicates", "Retried pushes recognized as "
                                  "already applied (answered, not applied again).",
                                  value=node.state.duplicates)
    m.add_collector(collect)
