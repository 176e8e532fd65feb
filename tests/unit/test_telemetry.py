"""The request accounting every node wraps around its handlers: counts by outcome, latency
buckets as Prometheus reads them (cumulative, `le` inclusive), errors re-raised."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import telemetry
from common.errors import DeltapsError, UnknownModel
from common.telemetry import NodeMetrics


def samples(m: NodeMetrics, family: str) -> dict:
    fams = {f.name: f for f in text_string_to_metric_families(m.text().decode())}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fams[family].samples}


def test_requests_are_counted_by_outcome_and_timed_into_inclusive_buckets(monkeypatch):
    clock = iter([0.0, 0.0001, 0.0, 20.0, 0.0, 0.0005])  # 0.1 ms, 20 s, 0.5 ms
    monkeypatch.setattr(telemetry.time, "perf_counter", lambda: next(clock))
    m = NodeMetrics("shard", 0)

    def handler(msg):
        if msg == "unknown":
            raise UnknownModel("no such model")
        if msg == "bug":
            raise KeyError("x")
        return msg
    pull = m.instrument("pull", handler)
    assert pull("a") == "a"
    with pytest.raises(KeyError):
        pull("bug")
    with pytest.raises(UnknownModel):
        pull("unknown")
    counts = samples(m, "deltaps_requests")
    assert {k[1]: v for k, v in counts.items()} == {
        (("op", "pull"), ("outcome", "ok")): 1, (("op", "pull"), ("outcome", "unknown_model")): 1,
        (("op", "pull"), ("outcome", "internal")): 1}
    lat = samples(m, "deltaps_request_seconds")

    def bucket(le):
        return lat[("deltaps_request_seconds_bucket", (("le", le), ("op", "pull")))]
    assert bucket("0.0001") == 0 + 1  # 0.1 ms falls in le=0.0001 exactly (inclusive)
    assert bucket("0.0005") == 2 and bucket("10.0") == 2 and bucket("+Inf") == 3
    assert lat[("deltaps_request_seconds_count", (("op", "pull"),))] == 3
    assert lat[("deltaps_request_seconds_sum", (("op", "pull"),))] == pytest.approx(20.0006)


def test_a_batch_counts_each_request_by_its_own_outcome():
    m = NodeMetrics("replica", 0)
    predict = m.instrument_batch("predict", lambda msgs: [
        DeltapsError("bad") if x < 0 else x for x in msgs])
    first = predict([1, -1, 2])
    assert first[0::2] == [1, 2] and isinstance(first[1], DeltapsError)
    assert predict([5]) == [5]
    counts = {k[1]: v for k, v in samples(m, "deltaps_requests").items()}
    assert counts[(("op", "predict"), ("outcome", "ok"))] == 3
    assert counts[(("op", "predict"), ("outcome", "error"))] == 1
    assert samples(m, "deltaps_request_seconds")[
        ("deltaps_request_seconds_count", (("op", "predict"),))] == 4


def test_each_node_has_its_own_registry():
    a, b = NodeMetrics("shard", 0), NodeMetrics("shard", 1)
    a.instrument("pull", lambda msg: msg)(1)
    assert ("deltaps_requests_total", (("op", "pull"), ("outcome", "ok"))) in samples(
        a, "deltaps_requests")
    assert samples(b, "deltaps_requests") == {}
