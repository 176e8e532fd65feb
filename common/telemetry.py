"""A node's Prometheus metrics: one `CollectorRegistry` per node, and the families every node
shares.

One registry per node, not prometheus_client's global one: the in-process test cluster runs
several nodes as threads of one process, and each must expose only its own numbers.

What is counted where, so the hot paths stay cheap:

- **Per request** (`instrument`, wrapped around each entry of a node's handler table):
  `deltaps_requests_total{op,outcome}` and `deltaps_request_seconds{op}`, the time the node's
  loop spent handling it. That is two clock reads, a bisect and three increments of plain
  numbers per request, kept per op and turned into families at scrape time; never anything
  per event or per key.
- **At scrape time** (`add_collector`): everything a node already keeps as plain numbers
  (sequence numbers, versions, staleness, cache hits, events learned, progressive log loss)
  is read when Prometheus asks, by a function the node registers, so keeping it costs
  nothing between scrapes. Such a function runs on the HTTP thread and only reads.

Names follow Prometheus' conventions: base units (seconds, bytes), `_total` for counters.
"""
from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from typing import Callable, Iterable

from prometheus_client import (CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                   HistogramMetricFamily, Metric)
from prometheus_client.process_collector import ProcessCollector

from common.errors import DeltapsError

# request handling on a node's loop takes from tens of microseconds (a pull of a few keys) to
# around a second (a snapshot of a large model)
LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                   50e-3, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# no `_created` series beside every counter and histogram: they double what is scraped and
# stored, and a node's start time is already `process_start_time_seconds`
disable_created_metrics()

__all__ = ["CONTENT_TYPE", "CounterMetricFamily", "GaugeMetricFamily", "Histogram",
           "LATENCY_BUCKETS", "NodeMetrics"]


class _Callback:
    """A collector that asks a function for its families at every scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self._collect())
        except RuntimeError:  # a dict the node's loop grew while we read it: next scrape
            return []


class _OpStats:
    """One op's counts by outcome and latency histogram as plain numbers: updated only by the
    node's loop thread (no lock), read at scrape time. prometheus_client's own Counter and
    Histogram take a lock per update, several times the cost of this on a request path."""

    __slots__ = ("outcomes", "buckets", "total")

    def __init__(self, n_buckets: int):
        self.outcomes: dict[str, int] = {"ok": 0}
        self.buckets = [0] * (n_buckets + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0


class NodeMetrics:
    """The registry of one node (shard, replica or worker) with the shared families."""

    def __init__(self, role: str, index: int | str):
        self.registry = CollectorRegistry(auto_describe=False)
        self.role, self.index = role, str(index)
        ProcessCollector(registry=self.registry)
        self.ops: dict[str, _OpStats] = {}
        self.add_collector(self._info)
        self.add_collector(self._requests)

    def _info(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("deltaps_node_info", "Which node this is (always 1).",
                                 labels=["role", "index"])
        info.add_metric([self.role, self.index], 1)
        yield info

    def _requests(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "deltaps_requests", "Requests answered by this node, by op and outcome ('ok' or "
            "the error code of the reply).", labels=["op", "outcome"])
        latency = HistogramMetricFamily(
            "deltaps_request_seconds", "Time this node's loop spent handling a request, by op "
            "(decoding and the shard's group commit excluded).", labels=["op"])
        bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
        for op, st in list(self.ops.items()):
            for outcome, n in list(st.outcomes.items()):
                requests.add_metric([op, outcome], n)
            cumulative = list(itertools.accumulate(st.buckets))
            latency.add_metric([op], list(zip(bounds, cumulative)), st.total)
        yield requests
        yield latency

    def histogram(self, name: str, documentation: str, buckets=LATENCY_BUCKETS,
                  labels: Iterable[str] = ()) -> Histogram:
        return Histogram(name, documentation, list(labels), buckets=buckets,
                         registry=self.registry)

    def counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
        """`name` without `_total` (prometheus_client adds it)."""
        return Counter(name, documentation, list(labels), registry=self.registry)

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Register a function returning families read at scrape time (see the module doc)."""
        self.registry.register(_Callback(collect))

    def text(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    # --- request accounting -------------------------------------------------------------------

    def _op(self, op: str) -> _OpStats:
        return self.ops.setdefault(op, _OpStats(len(LATENCY_BUCKETS)))

    def instrument(self, op: str, handler: Callable):
        """`handler`, counted and timed as `op`; an error it raises is counted by its code and
        re-raised (the request server turns it into the error reply). Call it from one thread
        (the node's loop)."""
        st = self._op(op)
        outcomes, buckets = st.outcomes, st.buckets

        def counted(msg):
            start = time.perf_counter()
            try:
                reply = handler(msg)
                outcome = "ok"
            except DeltapsError as exc:
                outcome = exc.code
                raise
            except Exception:
                outcome = "internal"
                raise
            finally:
                elapsed = time.perf_counter() - start
                buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
                st.total += elapsed
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            return reply
        return counted

    def instrument_batch(self, op: str, handler: Callable):
        """A batch handler (several requests answered in one pass): each request is counted by
        its own outcome and observed with the time the whole pass took, which it waited."""
        st = self._op(op)
        outcomes, buckets = st.outcomes, st.buckets

        def counted(msgs):
            start = time.perf_counter()
            try:
                results = handler(msgs)
            except Exception:
                outcomes["internal"] = outcomes.get("internal", 0) + len(msgs)
                raise
            elapsed = time.perf_counter() - start
            failed = 0
            for r in results:
                if isinstance(r, DeltapsError):
                    failed += 1
                    outcomes[r.code] = outcomes.get(r.code, 0) + 1
            outcomes["ok"] += len(results) - failed
            buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += len(results)
            st.total += elapsed * len(results)
            return results
        return counted

    def error_replies(self, errors: dict[str, int]) -> Iterable[Metric]:
        """Every error reply the request server sent, by code, including requests refused
        before any handler ran (undecodable, unknown op)."""
        family = CounterMetricFamily("deltaps_error_replies", "Error replies this node sent, "
                                     "by error code (refused requests included).",
                                     labels=["code"])
        for code, n in list(errors.items()):
            family.add_metric([code], n)
        yield family
