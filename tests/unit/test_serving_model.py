"""Serving state without sockets: pre-hashed scoring, update validation and versions, the
prediction cache, the replica's spec additions."""
from __future__ import annotations

import numpy as np
import pytest

from common.config import load_spec
from common.errors import InvalidInstance, InvalidValue
from common.features import Featurizer, columnarize
from common.messages import Update
from deploy.layout import plan_cluster
from serving.cache import PredictionCache, ids_key, instances_key
from serving.http import parse_listen
from serving.client import ids_message
from serving.model import ServingModel, check_csr, check_features

SPEC = "[models.m]\nbits = 10\ncrosses = [['user', 'item']]\n"


def ready_model(n_shards=2, seed=0):
    spec = load_spec(text=SPEC)
    model = ServingModel(spec.model("m"), spec.feature_spec("m"), n_shards)
    rng = np.random.default_rng(seed)
    for k in range(n_shards):
        size = model.weights[k::n_shards].size
        model.apply_snapshot(k, n_shards, 1, 0, rng.normal(size=size).astype(np.float32))
    return spec, model


INSTANCES = [{"user": "u1", "item": "i2", "age": 31.0}, {}, {"tags": ["a", "b", 3]},
             {"user": "u2"}]


def test_prehashed_ids_score_exactly_like_the_dicts_they_hash_to():
    spec, model = ready_model()
    batch = columnarize(INSTANCES, with_labels=False)
    features = Featurizer(spec.feature_spec("m")).featurize(batch)
    by_dicts = model.score(batch)
    by_ids = model.score_features(check_features(features.n, features.rows, features.ids, 100))
    assert by_ids.dtype == np.float32 and len(set(by_dicts.tolist())) == 4
    np.testing.assert_array_equal(by_ids, by_dicts)
    # order of the (row, id) pairs does not matter
    order = np.random.default_rng(1).permutation(features.rows.size)
    shuffled = check_features(features.n, features.rows[order], features.ids[order], 100)
    np.testing.assert_allclose(model.score_features(shuffled), by_dicts, rtol=1e-6)


@pytest.mark.parametrize("n, rows, ids, text", [
    (2, [0, 2], [1, 2], r"rows must lie in \[0, 2\)"),
    (2, [-1, 0], [1, 2], r"rows must lie in \[0, 2\)"),
    (2, [0], [1, 2], "rows has 1 entries but ids has 2"),
    (2, [[0, 1]], [[1, 2]], "must be 1-D"),
    (-3, [], [], r"outside \[0, 100\]"),
    (101, [], [], r"outside \[0, 100\]"),
    ("2", [0], [1], "n must be an integer"),
    (True, [0], [1], "n must be an integer"),
])
def test_prehashed_requests_are_validated(n, rows, ids, text):
    with pytest.raises(InvalidInstance, match=text):
        check_features(n, np.array(rows, np.int64), np.array(ids, np.uint64), 100)


def test_csr_form_scores_bit_identically_to_the_pairs():
    spec, model = ready_model()
    batch = columnarize(INSTANCES * 5, with_labels=False)
    features = Featurizer(spec.feature_spec("m")).featurize(batch)  # field by field
    assert int(features.ids.max()) >= 2 ** 32  # the wire keeps only the low 32 bits
    msg = ids_message("m", features)
    assert msg.offsets.tolist() == np.concatenate([[0], np.cumsum(np.bincount(
        features.rows, minlength=features.n))]).tolist()
    check_csr(msg.offsets, msg.ids, 100)
    np.testing.assert_array_equal(model.score_csr(msg.offsets, msg.ids), model.score(batch))


@pytest.mark.parametrize("offsets, ids, text", [
    ([0, 1, 3], [1, 2], r"end at len\(ids\) = 2, got 0 .. 3"),
    ([1, 2], [1, 2], r"start at 0 and end at len\(ids\) = 2, got 1 .. 2"),
    ([0, 2, 1, 2], [1, 2], r"never decrease: instance 1 ends before it starts \(2 > 1\)"),
    ([], [], "one entry per instance and one more"),
    (list(range(102)), list(range(101)), "for at most 100 instances; got 102 entries"),
    ([[0, 1]], [[1]], "must be 1-D"),
])
def test_prehashed_requests_in_csr_form_are_validated(offsets, ids, text):
    with pytest.raises(InvalidInstance, match=text):
        check_csr(np.array(offsets, np.int64), np.array(ids, np.uint32), 100)


def test_instances_without_any_feature_are_fine():
    _, model = ready_model()
    got = model.score_features(check_features(3, np.zeros(0, np.int64), np.zeros(0, np.uint64), 10))
    np.testing.assert_array_equal(got, np.full(3, 0.5, np.float32))
    offsets, ids = np.zeros(4, np.int64), np.zeros(0, np.uint32)
    check_csr(offsets, ids, 10)
    np.testing.assert_array_equal(model.score_csr(offsets, ids), np.full(3, 0.5, np.float32))


def upd(seq, keys, values, shard=0, epoch=1):
    return Update("m", shard, epoch, seq, np.array(keys, np.uint64), np.array(values, np.float32))


def test_version_counts_an_update_only_once_fully_written():
    _, model = ready_model()
    [u] = model.accept_update(upd(1, [0, 2, 4, 6], [1, 2, 3, 4]))
    model.write(u, 0, 2)
    assert model.version == [0, 0]  # half written: not declared
    assert model.weights[[0, 2]].tolist() == [1, 2]
    model.write(u, 2, None)
    model.finish(u)
    assert model.version == [1, 0] and model.weights[[4, 6]].tolist() == [3, 4]
    assert model.checksums()["0"][:2] == [1, 1]
    assert model.version_key() == ((1, 1), (1, 0))


@pytest.mark.parametrize("update, text", [
    (upd(1, [0, 2], [1.0]), "keys but"),
    (upd(1, [1 << 10], [1.0]), "outside model"),
    (upd(1, [0], [1.0], shard=5), "unknown shard"),
])
def test_bad_updates_change_nothing(update, text):
    _, model = ready_model()
    before = model.weights.copy()
    with pytest.raises(InvalidValue, match=text):
        model.accept_update(update)
    np.testing.assert_array_equal(model.weights, before)
    assert model.version == [0, 0] and model.ready
    model.apply_update(upd(1, [0], [5.0]))  # the sequence goes on: nothing was consumed
    assert model.version == [1, 0]


def test_cache_hits_repeats_at_the_same_version_only():
    now = [0.0]
    cache = PredictionCache(ttl_ms=1000, max_entries=10, clock=lambda: now[0])
    key = instances_key([{"a": "x", "b": 1}])
    assert key == instances_key([{"b": 1, "a": "x"}])  # field order does not matter
    assert key != instances_key([{"a": "x", "b": 2}])
    v1, v2 = ((1, 5), (1, 7)), ((1, 6), (1, 7))
    p = np.array([0.25], np.float32)
    assert cache.get("m", key, v1) is None
    cache.put("m", key, v1, p)
    assert cache.get("m", key, v1) is p
    assert cache.get("other", key, v1) is None
    assert cache.get("m", key, v2) is None  # a newer version: miss, and the entry is dropped
    assert cache.get("m", key, v1) is None
    cache.put("m", key, v2, p)
    now[0] = 1.5  # past the TTL
    assert cache.get("m", key, v2) is None
    assert cache.stats() == {"enabled": True, "entries": 0, "hits": 1, "misses": 5,
                             "hit_rate": pytest.approx(1 / 6, abs=1e-4)}


def test_cache_keeps_the_most_recently_used_entries():
    cache = PredictionCache(ttl_ms=1000, max_entries=2)
    v = ((0, 0),)
    for name in "abc":
        cache.put("m", name.encode(), v, np.zeros(1, np.float32))
    assert cache.get("m", b"a", v) is None and cache.get("m", b"c", v) is not None
    assert len(cache.entries) == 2


def test_cache_is_off_by_default_and_skips_what_it_cannot_key():
    spec = load_spec()
    assert spec.prediction_cache_ttl_ms == 0 and spec.prediction_cache_entries == 10000
    cache = PredictionCache(spec.prediction_cache_ttl_ms, spec.prediction_cache_entries)
    assert not cache.enabled
    cache.put("m", b"k", (), np.zeros(1))
    assert cache.get("m", b"k", ()) is None and cache.stats()["misses"] == 0
    assert instances_key([{"a": "x" * 70_000}]) is None  # too large to be worth caching
    assert instances_key([{"a": 10 ** 30}]) is None
    ids = np.array([5, 6], np.uint64)
    assert ids_key(np.array([0, 1, 2]), ids) != ids_key(np.array([0, 2, 2]), ids)
    assert ids_key(np.array([0, 1, 2]), ids) == ids_key(np.array([0, 1, 2]), ids.copy())
    assert ids_key(np.array([0, 10_000]), np.zeros(10_000, np.uint64)) is None


def test_spec_gives_every_replica_an_http_address():
    spec = load_spec(text="[cluster]\nreplicas = 3\nhttp_base_port = 8500\n"
                          "prediction_cache_ttl_ms = 50\n")
    assert spec.prediction_cache_ttl_ms == 50.0
    nodes = plan_cluster(spec).replicas()
    assert [n.http_address for n in nodes] == [f"http://127.0.0.1:{8500 + r}" for r in range(3)]
    spec.http_base_port = 0
    cluster = plan_cluster(spec)
    http_ports = {int(n.http_address.rsplit(":", 1)[1]) for n in cluster.replicas()}
    zmq_ports = {int(a.rsplit(":", 1)[1]) for n in cluster.nodes
                 for a in (n.address, n.pub_address) if a}
    assert len(http_ports) == 3 and not http_ports & zmq_ports
    assert all(n.http_address == "" for n in cluster.shards())


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:8501", ("127.0.0.1", 8501)),
    ("http://0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_parse_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["8501", "host:", ":80", "host:http"])
def test_parse_listen_refuses_nonsense(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(text)
