"""JSON log lines, the metrics ports a planned cluster gets, and the worker notes
`deltaps status` reads."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from common.config import load_spec
from common.logs import JsonFormatter, log_format
from deploy.layout import plan_cluster
from deploy.workers import register, unregister, worker_rows


def test_json_formatter_writes_one_object_per_record_with_the_traceback():
    fmt = JsonFormatter("shard-3")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.getLogger("deltaps.x").makeRecord(
            "deltaps.x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    line = fmt.format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["node"] == "shard-3" and doc["level"] == "ERROR" and doc["message"] == "failed here"
    assert doc["logger"] == "deltaps.x" and "ValueError: bad" in doc["exception"]
    assert doc["time"].endswith("+00:00")


def test_log_format_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.delenv("DELTAPS_LOG_FORMAT", raising=False)
    assert log_format() == "text"
    monkeypatch.setenv("DELTAPS_LOG_FORMAT", "json")
    assert log_format() == "json" and log_format("text") == "text"
    monkeypatch.setenv("DELTAPS_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="xml"):
        log_format()


def test_planned_metrics_ports_follow_the_base_and_never_collide():
    spec = load_spec(text="[cluster]\nshards = 2\nreplicas = 2\nmetrics_base_port = 9100\n")
    cluster = plan_cluster(spec)
    assert [n.metrics_address for n in cluster.nodes] == [
        f"http://127.0.0.1:{p}" for p in (9100, 9101, 9102, 9103)]
    spec.metrics_base_port = 0
    ports = []
    for n in plan_cluster(spec).nodes:
        ports += [a.rsplit(":", 1)[1] for a in (n.address, n.pub_address, n.http_address,
                                                 n.metrics_address) if a]
    assert len(ports) == len(set(ports)) == 2 * 2 + 2 + 2 * 2 + 2


def test_status_shows_running_workers_and_forgets_finished_ones(tmp_path):
    cluster_file = tmp_path / "cluster.json"
    note = register(cluster_file, "ctr", "synthetic:10", "http://127.0.0.1:9999")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "workers" / f"{dead.pid}.json").write_text(json.dumps(
        {"pid": dead.pid, "model": "ctr", "source": "x", "metrics_address": "http://h:1"}))
    rows = worker_rows(cluster_file)
    assert [(r["role"], r["pid"], r["metrics"]) for r in rows] == [
        ("worker", os.getpid(), "http://127.0.0.1:9999")]
    assert not (tmp_path / "workers" / f"{dead.pid}.json").exists()
    unregister(note)
    assert worker_rows(cluster_file) == []
