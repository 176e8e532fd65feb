"""CurveZMQ membership on a real cluster of processes (`LocalCluster(secure=True)`, the keys
`deltaps up --secure` makes): members train and read; a stranger's key gets no connection, a
plain-TCP peer gets nothing, a member's key outside its role gets `forbidden`; none of them
changes a weight or stops a node, and every refusal is counted in the node's status."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from common.errors import Forbidden, RemoteError, Timeout
from common.messages import (ChecksumRequest, Hello, Predict, PROTOCOL, Pull, Push, Shutdown,
                             SnapshotRequest, StatusRequest, TakeSnapshot)
from common.transport import Channel, KeyPair, Subscriber, client_key, read_key_pair
from common.wire import encode
from deploy.local import LocalCluster
from serving.client import ServingClient
from tests.rawpeer import RawDealer

REPO = Path(__file__).resolve().parents[2]
MODEL = "default"
NO_ANSWER_S = 1.0  # how long a refused peer waits for the reply that never comes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("secure"), "", 2, 1, secure=True)
    try:
        c.start_all()
        train = subprocess.run(
            [sys.executable, "-m", "deploy.nodes.worker", "synthetic:20000:3", "--cluster",
             str(c.path), "--json"], cwd=REPO, capture_output=True, text=True, timeout=180,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert train.returncode == 0, train.stderr
        c.trained = json.loads(train.stdout.strip().splitlines()[-1])
        yield c
    finally:
        c.stop_all()


def key(c: LocalCluster, role: str) -> KeyPair:
    return read_key_pair(c.dir / "keys" / f"{role}.key_secret")


def request(address: str, msg, pair: KeyPair | None = None, timeout: float = 5.0):
    with client_key(pair) if pair else contextlib.nullcontext():
        ch = Channel(address)
    try:
        return ch.request(msg, timeout)
    finally:
        ch.close()


def weights(c: LocalCluster) -> dict:
    """Every shard's checksums (as admin): equal before and after means nothing changed."""
    return {n.index: request(n.address, ChecksumRequest()).sums for n in c.cluster.shards()}


def security(c: LocalCluster, role: str, index: int = 0) -> dict:
    return request(c.address(role, index), StatusRequest()).info["security"]


def attacks(c: LocalCluster) -> list:
    """(address, request) for each op that would harm or leak: the targets' list."""
    shard = c.address("shard", 0)
    keys = np.array([0, 2, 4], np.uint64)
    return [(shard, Shutdown()),
            (shard, Push(MODEL, keys, np.full((3, 2), 1e3, np.float32))),
            (shard, Pull(MODEL, keys)),
            (shard, SnapshotRequest(MODEL)),
            (shard, TakeSnapshot()),
            (c.address("replica", 0), Predict(MODEL, [{}]))]


def test_members_train_and_read_secured(cluster):
    assert cluster.trained["events"] == 20000
    assert 0.3 < cluster.trained["logloss"] < 0.69
    with client_key(key(cluster, "client")):
        with ServingClient([cluster.address("replica", 0)], 5.0) as client:
            result = client.predict(MODEL, [{}, {"c1": "x"}])
    assert len(result.probabilities) == 2 and sum(result.version) > 0
    assert security(cluster, "shard")["curve"] is True


def test_stranger_key_gets_no_connection_and_changes_nothing(cluster):
    before, refused = weights(cluster), security(cluster, "shard")["refused_connections"]
    stranger = KeyPair.generate()
    for address, msg in attacks(cluster):
        with pytest.raises(Timeout):
            request(address, msg, stranger, NO_ANSWER_S)
    assert weights(cluster) == before
    assert request(cluster.address("shard", 0), Hello(PROTOCOL, "admin")).role == "shard"
    after = security(cluster, "shard")["refused_connections"]
    assert after.get("unknown_key", 0) > refused.get("unknown_key", 0)
    assert security(cluster, "replica")["refused_connections"].get("unknown_key", 0) > 0


def test_plain_tcp_peer_gets_nothing(cluster):
    with RawDealer(cluster.address("shard", 0)) as peer:
        with pytest.raises(Timeout):
            peer.exchange(encode(Shutdown(), 1), NO_ANSWER_S)
    assert request(cluster.address("shard", 0), StatusRequest()).info["state"] == "serving"


@pytest.mark.parametrize("role", ["client", "replica"])
def test_wrong_role_is_forbidden_changes_nothing_and_is_counted(cluster, role):
    before = weights(cluster)
    counted = security(cluster, "shard")["forbidden"]
    pair = key(cluster, role)
    refused_ops = []
    for address, msg in attacks(cluster):
        if address != cluster.address("shard", 0):
            continue
        if role == "replica" and msg.op == "snapshot":
            continue  # the replica's own op
        with pytest.raises(Forbidden) as err:
            request(address, msg, pair)
        assert isinstance(err.value, RemoteError) and msg.op in str(err.value)
        refused_ops.append(msg.op)
    assert weights(cluster) == before
    now = security(cluster, "shard")["forbidden"]
    for op in refused_ops:
        assert now.get(op, 0) == counted.get(op, 0) + 1, op


def test_worker_key_may_not_predict(cluster):
    replica = cluster.address("replica", 0)
    before = security(cluster, "replica")["forbidden"].get("predict", 0)
    with pytest.raises(Forbidden):
        request(replica, Predict(MODEL, [{}]), key(cluster, "worker"))
    assert security(cluster, "replica")["forbidden"]["predict"] == before + 1
    assert len(request(replica, Predict(MODEL, [{}]), key(cluster, "client")).probabilities) == 1


def _heard(c: LocalCluster, pair: KeyPair, seconds: float = 1.5) -> int:
    """Messages (heartbeats, every 250 ms) heard on shard 0's update stream with `pair`."""
    with client_key(pair):
        sub = Subscriber([c.info("shard", 0).pub_address])
    try:
        got = 0
        for _ in range(int(seconds / 0.1)):
            sub.poll(0.1)
            got += len(sub.drain())
        return got
    finally:
        sub.close()


def test_update_stream_admits_only_replicas_and_admins(cluster):
    assert _heard(cluster, key(cluster, "replica")) > 0  # the stream is there to hear
    assert _heard(cluster, KeyPair.generate()) == 0
    assert _heard(cluster, key(cluster, "client")) == 0
    refused = security(cluster, "shard")["refused_connections"]
    assert refused.get("client_subscribe", 0) > 0


def _http(url: str, body: bytes | None, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_needs_the_bearer_token(cluster):
    base = cluster.info("replica", 0).http_address
    token = (cluster.dir / "keys" / "http.token").read_text().strip()
    url = f"{base}/v1/models/{MODEL}:predict"
    body = json.dumps({"instances": [{}]}).encode()
    before = security(cluster, "replica").get("http_unauthorized", 0)
    assert _http(url, body, None)[0] == 401
    assert _http(url, body, token + "x")[0] == 401
    assert _http(f"{base}/v1/models/{MODEL}", None, "nope")[0] == 401
    assert security(cluster, "replica")["http_unauthorized"] == before + 3
    status, doc = _http(url, body, token)
    assert status == 200 and len(doc["predictions"]) == 1
    assert _http(f"{base}/healthz", None, None)[0] == 200  # probes stay open


def test_status_shows_no_key(cluster):
    text = json.dumps([request(n.address, StatusRequest()).info for n in cluster.cluster.nodes])
    for role in ("server", "worker", "replica", "client", "admin"):
        pair = key(cluster, role)
        assert pair.secret.decode() not in text and pair.public.decode() not in text
    for n in cluster.cluster.nodes:
        log = cluster.log(n.role, n.index)
        assert key(cluster, "server").secret.decode() not in log


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a cert")
def test_http_over_tls(local_cluster, tmp_path):
    cert, pem_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(pem_key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    c = local_cluster(f'[security]\nhttp_tls_cert_file = "{cert}"\n'
                      f'http_tls_key_file = "{pem_key}"\n', 1, 1, secure=True).start_all()
    https = c.info("replica", 0).http_address
    assert https.startswith("https://")
    token = (c.dir / "keys" / "http.token").read_text().strip()
    req = urllib.request.Request(f"{https}/v1/models/{MODEL}:predict",
                                 data=json.dumps({"instances": [{}]}).encode(),
                                 headers={"Authorization": f"Bearer {token}"})
    trusted = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(req, timeout=5, context=trusted) as resp:
        assert resp.status == 200 and len(json.loads(resp.read())["predictions"]) == 1
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP there
        urllib.request.urlopen(https.replace("https://", "http://") + "/healthz", timeout=5)
    assert request(c.address("replica", 0), StatusRequest()).info["http_address"] == https


def test_ingest_socket_takes_events_from_producer_keys_only(cluster, tmp_path):
    """A worker's ingest socket binds with the server key as nodes do: a producer key's events
    are learned, a client key's ingest is forbidden, a stranger gets no connection."""
    from common.messages import IngestStatus
    from common.security import install
    from deploy.layout import free_ports
    from tests.integration.helpers import planted_events
    from worker.producer import Producer

    install(cluster.spec.security, "admin")  # a secured cluster stopped before turns it off
    address = f"127.0.0.1:{free_ports('127.0.0.1', 1)[0]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "deploy.nodes.worker", f"zmq://{address}?state={tmp_path}",
         "--cluster", str(cluster.path), "--metrics", "off", "--json"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        with client_key(key(cluster, "producer")):
            producer = Producer(address, "p1", timeout_s=2.0, connect_s=120.0)
        producer.send(planted_events(300, seed=9))
        producer.flush(timeout=60)
        assert producer.acked == 1
        producer.close()
        with pytest.raises(Forbidden):
            request(f"tcp://{address}", IngestStatus("p2"), key(cluster, "client"))
        with pytest.raises(Timeout):
            request(f"tcp://{address}", IngestStatus("p3"), KeyPair.generate(), NO_ANSWER_S)
        worker.terminate()
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["events"] == 300
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
