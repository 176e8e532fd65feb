"""/metrics, /healthz and /readyz on every node type of a real cluster: each endpoint parses
with Prometheus' own text parser, carries its families, and its counters move when the
cluster works (and not before)."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.errors import UnknownModel
from common.httpd import MetricsServer
from common.plain_httpd import PlainMetricsServer
from common.telemetry import NodeMetrics
from deploy.admin import cluster_status
from serving.client import ServingClient
from tests.integration.helpers import (SMALL_SPEC, ListSource, planted_events,
                                       stopped_by_sigterm, wait_replica_caught_up)
from worker.exporter import watch_trainer
from worker.ps_client import PSClient
from worker.trainer import Trainer

COMMON = {"deltaps_requests", "deltaps_request_seconds", "deltaps_error_replies",
          "deltaps_node_info", "process_resident_memory_bytes"}
SHARD = COMMON | {"deltaps_wal_fsync_seconds", "deltaps_publish_delay_seconds",
                  "deltaps_published_updates", "deltaps_published_keys",
                  "deltaps_shard_sequence", "deltaps_shard_pushes", "deltaps_shard_pulls",
                  "deltaps_shard_slots", "deltaps_wal_lsn", "deltaps_snapshot_lsn",
                  "deltaps_push_duplicates"}
REPLICA = COMMON | {"deltaps_replica_model_version", "deltaps_replica_shard_sequence",
                    "deltaps_replica_staleness_seconds", "deltaps_replica_ready",
                    "deltaps_replica_resyncs", "deltaps_replica_updates_applied",
                    "deltaps_prediction_cache_hits", "deltaps_prediction_cache_misses",
                    "deltaps_prediction_cache_entries", "deltaps_predict_instances"}
WORKER = {"deltaps_worker_events", "deltaps_worker_logloss", "deltaps_worker_recent_logloss",
          "deltaps_worker_auc", "deltaps_worker_recent_auc", "deltaps_node_info"}


def scrape(url: str) -> dict[str, dict]:
    """{family: {(sample name, labels...): value}} parsed by prometheus_client's parser."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {(s.name, *sorted(s.labels.items())): s.value for s in family.samples}
    return out


def value(families: dict, family: str, sample: str | None = None, **labels) -> float:
    key = (sample or family, *sorted(labels.items()))
    return families[family].get(key, 0.0)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_every_node_serves_its_families_and_counters_move_with_work(inprocess_cluster):
    c = inprocess_cluster(SMALL_SPEC, shards=2, replicas=1, fsync="always",
                          prediction_cache_ttl_ms=60000.0).start_all()
    shards = [n.metrics_address for n in c.cluster.shards()]
    replica = c.cluster.replicas()[0].metrics_address
    assert all(shards) and replica and len(set(shards + [replica])) == 3
    before = [scrape(url) for url in shards]
    for families in before:
        assert SHARD <= set(families), SHARD - set(families)
        assert value(families, "deltaps_requests", "deltaps_requests_total",
                     op="push", outcome="ok") == 0
    assert REPLICA <= set(scrape(replica))

    ps = PSClient(c.cluster.shards())
    try:
        trainer = Trainer(ps, c.spec, "ctr", batch_size=100)
        trainer.train(ListSource(planted_events(1000)))
        wait_replica_caught_up(c.address("replica", 0), "ctr", trainer.last_seqs)
    finally:
        ps.close()
    with ServingClient([c.address("replica", 0)], timeout=5.0) as client:
        for _ in range(3):  # the same request: one miss, then cache hits
            client.predict("ctr", [{"user": "u1", "item": "i2"}])
        with pytest.raises(UnknownModel):
            client.predict("nope", [{}])

    for k, url in enumerate(shards):
        f = scrape(url)
        pushes = value(f, "deltaps_requests", "deltaps_requests_total", op="push", outcome="ok")
        assert pushes == 10, k  # 1000 events in batches of 100, one push per shard a batch
        assert value(f, "deltaps_request_seconds", "deltaps_request_seconds_count",
                     op="pull") == value(f, "deltaps_requests", "deltaps_requests_total",
                                         op="pull", outcome="ok") > 0
        assert value(f, "deltaps_wal_fsync_seconds", "deltaps_wal_fsync_seconds_count") >= 1
        assert value(f, "deltaps_publish_delay_seconds",
                     "deltaps_publish_delay_seconds_count") >= 1
        assert value(f, "deltaps_shard_sequence", model="ctr") == trainer.last_seqs[k]
        assert value(f, "deltaps_wal_lsn") >= 10
        assert value(f, "deltaps_node_info", role="shard", index=str(k)) == 1

    f = scrape(replica)
    assert value(f, "deltaps_requests", "deltaps_requests_total", op="predict",
                 outcome="ok") == 3
    assert value(f, "deltaps_requests", "deltaps_requests_total", op="predict",
                 outcome="unknown_model") == 1
    assert value(f, "deltaps_error_replies", "deltaps_error_replies_total",
                 code="unknown_model") == 1
    assert value(f, "deltaps_request_seconds", "deltaps_request_seconds_count",
                 op="predict") == 4
    assert value(f, "deltaps_prediction_cache_hits", "deltaps_prediction_cache_hits_total") == 2
    assert value(f, "deltaps_prediction_cache_misses",
                 "deltaps_prediction_cache_misses_total") == 1
    assert value(f, "deltaps_replica_model_version", model="ctr") == sum(
        trainer.last_seqs.values())
    assert value(f, "deltaps_replica_ready", model="ctr") == 1
    assert value(f, "deltaps_replica_staleness_seconds", model="ctr") >= 0

    # the probes, and the addresses `deltaps status` shows
    for url in shards + [replica]:
        assert get(url + "/healthz")[0] == 200
        assert get(url + "/readyz")[0] == 200
    rows = cluster_status(c.cluster)
    assert [r["metrics"] for r in rows] == shards + [replica]


@contextmanager
def watched_trainer(c, server_class, index: int = 0):
    """A trainer of model "ctr" against cluster `c`, its metrics served by a `server_class`
    on a free port: (trainer, server); both closed afterwards."""
    ps = PSClient(c.cluster.shards())
    metrics = NodeMetrics("worker", index)
    server = None
    try:
        trainer = Trainer(ps, c.spec, "ctr", batch_size=100)
        watch_trainer(metrics, trainer)
        server = server_class("127.0.0.1", 0, metrics).start()
        yield trainer, server
    finally:
        if server is not None:
            server.stop()
        ps.close()


def test_a_worker_exports_events_learned_and_progressive_quality(inprocess_cluster):
    c = inprocess_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    # the plain server is what `deltaps train` runs
    with watched_trainer(c, PlainMetricsServer, index=7) as (trainer, server):
        f = scrape(server.url)
        assert WORKER <= set(f)
        assert value(f, "deltaps_worker_events", "deltaps_worker_events_total", model="ctr") == 0
        assert not f["deltaps_worker_logloss"]  # nothing learned: no sample, not NaN
        trainer.train(ListSource(planted_events(700)))
        f = scrape(server.url)
        assert value(f, "deltaps_worker_events", "deltaps_worker_events_total",
                     model="ctr") == 700
        assert value(f, "deltaps_worker_logloss", model="ctr") == pytest.approx(
            trainer.metrics.logloss)
        assert 0.5 < value(f, "deltaps_worker_auc", model="ctr") <= 1.0
        assert get(server.url + "/readyz")[0] == 200
        assert get(server.url + "/healthz")[0] == 200
        assert get(server.url + "/nothing")[0] == 404


def test_probes_fail_when_the_node_loop_does_not_answer():
    # a backend nobody binds: the loop never answers, so the node is neither alive nor ready
    server = MetricsServer("127.0.0.1", 0, NodeMetrics("shard", 0),
                           backend="inproc://deltaps-test-nobody-home").start()
    try:
        assert get(server.url + "/healthz")[0] == 503
        status, body = get(server.url + "/readyz")
        assert status == 503 and body["ready"] is False
    finally:
        server.stop()


def test_node_processes_serve_metrics_where_the_cluster_file_says_and_log_json(
        local_cluster, monkeypatch):
    monkeypatch.setenv("DELTAPS_LOG_FORMAT", "json")  # what `deltaps up --log-format json` sets
    c = local_cluster(SMALL_SPEC, shards=1, replicas=1).start_all()
    for role, families in (("shard", SHARD), ("replica", REPLICA)):
        url = c.info(role, 0).metrics_address
        assert families <= set(scrape(url))
        assert get(url + "/readyz")[0] == 200
        assert value(scrape(url), "deltaps_node_info", role=role, index="0") == 1
        lines = [line for line in c.log(role, 0).splitlines() if line.strip()]
        docs = [json.loads(line) for line in lines]  # every line is one JSON object
        assert any("/metrics" in d["message"] for d in docs)
        assert {d["node"] for d in docs} == {f"{role}-0"}


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
NAME = re.compile(r"\b((?:deltaps|process)_[a-z0-9_]+)\b")


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def series_names(url: str) -> set[str]:
    """Every series name a node's families have (a counter that has not counted yet still
    names its `_total`)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        families = list(text_string_to_metric_families(r.read().decode()))
    return {f.name + suffix for f in families for suffix in SUFFIXES.get(f.type, ("",))}


def dashboard_names() -> dict[str, set[str]]:
    """Panel title -> every metric name its expressions use."""
    doc = json.loads(DASHBOARD.read_text())
    return {p["title"]: {n for t in p["targets"] for n in NAME.findall(t["expr"])}
            for p in doc["panels"]}


def test_every_dashboard_expression_names_a_series_the_nodes_expose(inprocess_cluster):
    c = inprocess_cluster(SMALL_SPEC, shards=1, replicas=1).start_all()
    with watched_trainer(c, MetricsServer) as (trainer, server):
        trainer.train(ListSource(planted_events(300)))
        exposed = set()
        for url in [n.metrics_address for n in c.cluster.nodes] + [server.url]:
            exposed |= series_names(url)
    names = dashboard_names()
    assert len(names) >= 10 and all(names.values())
    unknown = {title: used - exposed for title, used in names.items() if used - exposed}
    assert not unknown, f"dashboard panels name series no node exposes: {unknown}"
    # the check sees a misspelt name (it cannot pass by finding nothing)
    assert NAME.findall("rate(deltaps_requets_total[1m])") == ["deltaps_requets_total"]
    assert "deltaps_requets_total" not in exposed


def test_a_training_worker_lists_its_default_endpoint_while_it_runs(local_cluster, tmp_path):
    """`deltaps train` with the default `--metrics auto`: once the run has lasted a moment the
    worker's endpoint is bound, listed for `deltaps status` and serves the worker's families;
    after SIGTERM it is no longer listed."""
    import os
    import subprocess
    import sys
    import time

    from deploy.workers import worker_rows

    c = local_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in planted_events(2000, seed=3)))
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.nodes.worker", str(path), "--follow", "--cluster",
         str(c.path), "--model", "ctr", "--batch-size", "200", "--json"], cwd=repo,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": repo})
    try:
        deadline = time.monotonic() + 60
        while not (rows := worker_rows(c.path)):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker's endpoint was never listed"
            time.sleep(0.05)
        url = rows[0]["metrics"]
        assert rows[0]["pid"] == proc.pid
        assert WORKER <= set(scrape(url))
        assert get(url + "/healthz")[0] == 200
    finally:
        _, err = stopped_by_sigterm(proc)
    assert proc.returncode == 0, err[-3000:]
    assert worker_rows(c.path) == []
