"""The REST endpoint of a real replica (a node thread of this process), through a real HTTP
client (urllib)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from deploy.admin import node_status
from serving.client import ServingClient
from tests.integration.helpers import (SMALL_SPEC, ListSource, planted_events,
                                       wait_replica_caught_up)
from worker.ps_client import PSClient
from worker.trainer import Trainer

MAX_BODY = 1 << 20


def http(method: str, url: str, body: bytes | dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict]:
    """(status, JSON body) of one request; error statuses are returned, not raised."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def trained(module_inprocess_cluster):
    """2 shards, 1 replica with HTTP, a model trained on a few thousand events."""
    c = module_inprocess_cluster(SMALL_SPEC, shards=2, replicas=1, max_message_bytes=MAX_BODY)
    c.start_all()
    ps = PSClient(c.cluster.shards())
    trainer = Trainer(ps, c.spec, "ctr", batch_size=128)
    trainer.train(ListSource(planted_events(3000)))
    ps.close()
    wait_replica_caught_up(c.address("replica", 0), "ctr", trainer.last_seqs)
    yield c, c.cluster.replicas()[0].http_address


def test_http_predict_answers_exactly_what_the_zmq_client_does(trained):
    c, base = trained
    instances = [e["features"] for e in planted_events(50, seed=3)] + [{}]
    status, body = http("POST", f"{base}/v1/models/ctr:predict", {"instances": instances})
    assert status == 200, body
    with ServingClient([c.address("replica", 0)]) as client:
        direct = client.predict("ctr", instances)
    got = np.array(body["predictions"], dtype=np.float32)
    assert got.shape == (51,) and len(set(got.tolist())) > 5  # a trained model, varied answers
    np.testing.assert_array_equal(got, direct.probabilities)
    assert body["model_version"] == direct.version and min(direct.version) > 0
    assert isinstance(body["staleness_ms"], float) and body["staleness_ms"] >= 0


@pytest.mark.parametrize("body, status, text", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    ({"inputs": [{}]}, 400, '"instances"'),
    (b"[1, 2]", 400, '"instances"'),
    ({"instances": {"user": "u1"}}, 400, "must be a list"),
    ({"instances": [5]}, 400, "expected an object"),
    ({"instances": [{"user": {"nested": 1}}]}, 400, "unsupported type dict"),
    ({"instances": [{"user": [1.5]}]}, 400, "list must hold strings or integers"),
    (b'{"instances": [{"age": 1e999}]}', 400, "not finite"),
    ({"instances": [{"user": 10 ** 30}]}, 400, "cannot be read"),
])
def test_http_predict_refuses_bad_requests_with_400(trained, body, status, text):
    c, base = trained
    got, answer = http("POST", f"{base}/v1/models/ctr:predict", body)
    assert got == status and text in answer["error"], answer
    assert http("GET", f"{base}/healthz")[0] == 200  # and the replica is still fine


def test_http_status_codes_for_unknown_models_paths_methods_and_big_bodies(trained):
    _c, base = trained
    status, body = http("POST", f"{base}/v1/models/nope:predict", {"instances": [{}]})
    assert status == 404 and "unknown model 'nope'" in body["error"]
    status, body = http("GET", f"{base}/v1/models/nope")
    assert status == 404 and "unknown model 'nope'" in body["error"]
    assert http("GET", f"{base}/v2/whatever")[0] == 404
    status, body = http("GET", f"{base}/v1/models/ctr:predict")
    assert status == 405 and "error" in body
    big = {"instances": [{"user": "u" * 1000}] * (MAX_BODY // 1000 + 10)}
    status, body = http("POST", f"{base}/v1/models/ctr:predict", big)
    assert status == 413 and str(MAX_BODY) in body["error"]


def test_http_model_status_health_and_replica_counters(trained):
    c, base = trained
    status, body = http("GET", f"{base}/v1/models/ctr")
    assert status == 200
    [entry] = body["model_version_status"]
    assert entry["state"] == "AVAILABLE" and entry["status"]["error_code"] == "OK"
    assert int(entry["version"]) == sum(body["model_version"]) > 0
    assert body["staleness_ms"] >= 0
    assert http("GET", f"{base}/healthz") == (200, {"status": "alive", "state": "ready"})
    assert http("GET", f"{base}/readyz") == (200, {"ready": True, "models": {"ctr": True}})

    before = node_status(c.address("replica", 0), 2.0)
    for _ in range(5):
        assert http("POST", f"{base}/v1/models/ctr:predict", {"instances": [{}, {}]})[0] == 200
    assert http("POST", f"{base}/v1/models/ctr:predict", {"instances": [7]})[0] == 400
    st = node_status(c.address("replica", 0), 2.0)
    assert st["http_address"] == base
    assert st["predict"]["served"] - before["predict"]["served"] == 5
    assert st["predict"]["instances"] - before["predict"]["instances"] == 10
    assert st["errors"] - before["errors"] == 1
    assert st["errors_by_code"].get("invalid_instance", 0) >= 1
    assert 0 < st["predict"]["ms"]["p50"] <= st["predict"]["ms"]["p99"]
    assert st["cache"]["enabled"] is False and st["cache"]["hits"] == 0  # off by default


def test_http_on_a_replica_whose_shards_are_down_is_alive_but_not_ready(inprocess_cluster):
    c = inprocess_cluster(SMALL_SPEC, shards=2, replicas=1)
    c.start("replica", 0)  # no shard is running: the replica can never sync
    base = c.cluster.replicas()[0].http_address
    deadline = time.monotonic() + 20
    while True:
        try:
            status, body = http("GET", f"{base}/healthz", timeout=2.0)
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "HTTP never came up:\n" + c.log("replica", 0)
            time.sleep(0.05)
    assert (status, body) == (200, {"status": "alive", "state": "syncing"})
    assert http("GET", f"{base}/readyz") == (503, {"ready": False, "models": {"ctr": False}})
    status, body = http("POST", f"{base}/v1/models/ctr:predict", {"instances": [{}]})
    assert status == 503 and "not ready" in body["error"]
    status, body = http("GET", f"{base}/v1/models/ctr")
    assert status == 200 and body["model_version_status"][0]["state"] == "LOADING"
