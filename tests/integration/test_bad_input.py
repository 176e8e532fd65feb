"""Bad input to a running shard gets a clear error reply, changes nothing, and crashes nothing."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from common.messages import (ErrorReply, Hello, Message, PROTOCOL, Predict, Pull, Push,
                             StatusRequest)
from common.errors import RemoteError
from common.transport import Channel
from common import wire
from common.wire import encode
from tests.integration.helpers import SMALL_SPEC
from tests.rawpeer import raw_exchange
from worker.ps_client import PSClient


@pytest.fixture
def shard0(local_cluster):
    c = local_cluster(SMALL_SPEC, shards=2, replicas=0).start_all()
    ch = Channel(c.address("shard", 0), max_bytes=1 << 30)
    yield c, ch
    ch.close()


def _raw(ch: Channel, frames) -> Message:
    """Send `frames` as they are to the node `ch` talks to; its reply."""
    return raw_exchange(ch.address, frames, 5.0, ch.max_bytes)


def _weights(c, keys):
    client = PSClient(c.cluster.shards())
    try:
        return client.pull("ctr", keys)
    finally:
        client.close()


KEYS = np.array([0, 2, 4, 6], dtype=np.uint64)


@pytest.mark.parametrize("frames, code, text", [
    ([b"\xc1garbage"], "malformed", "not valid msgpack"),
    ([msgpack.packb([1, 2])], "malformed", "not a map"),
    ([msgpack.packb({"op": "fly", "v": PROTOCOL})], "unknown_op", "unknown op 'fly'"),
    ([msgpack.packb({"op": "pull", "v": 99, "model": "ctr"})], "protocol_mismatch",
     "speaks 99"),
    ([msgpack.packb({"op": "pull", "v": PROTOCOL, "arrays": [["<u8", [1]]]}), b"\0" * 8],
     "malformed", "missing field 'model'"),
    ([msgpack.packb({"op": "pull", "v": PROTOCOL, "model": "ctr",
                     "arrays": [["<u8", [4]]]}), b"\0" * 8], "malformed", "needs 32"),
    ([msgpack.packb({"op": "pull", "v": PROTOCOL, "model": "ctr",
                     "arrays": [["<f4", [2]]]}), b"\0" * 8], "malformed", "must be <u8"),
    ([msgpack.packb({"op": "pull", "v": PROTOCOL, "model": 7,
                     "arrays": [["<u8", [1]]]}), b"\0" * 8], "malformed", "must be str"),
])
def test_malformed_frames_get_error_replies(shard0, frames, code, text):
    c, ch = shard0
    reply = _raw(ch, frames)
    assert isinstance(reply, ErrorReply)
    assert reply.code == code and text in reply.message
    assert ch.request(StatusRequest(), 5).info["state"] == "serving"


def _deltas(*first_row):
    """Deltas of FTRL's (z, n) for the 4 keys: 1 everywhere but the first row."""
    d = np.ones((4, 2), np.float32)
    d[0] = first_row
    return d


@pytest.mark.parametrize("deltas, keys, text", [
    (_deltas(np.nan, 1), KEYS, "NaN or inf"),
    (_deltas(1, np.inf), KEYS, "NaN or inf"),
    (_deltas(1e7, 1), KEYS, "delta 1e+07 of z for key 0 exceeds max_delta = 1e+06"),
    (_deltas(1, -5), KEYS, "delta -5 would make n of key 0 negative"),
    (np.ones(4, np.float32), KEYS, "deltas of shape [4] for 4 keys"),
    (np.ones((4, 3), np.float32), KEYS, "deltas of shape [4, 3] for 4 keys"),
    (np.ones((3, 2), np.float32), KEYS, "deltas of shape [3, 2] for 4 keys"),
    (np.ones((4, 2), np.float32), np.array([6, 4, 2, 0], np.uint64), "sorted and unique"),
    (np.ones((4, 2), np.float32), np.array([0, 2, 2, 4], np.uint64), "sorted and unique"),
    (np.ones((4, 2), np.float32), np.array([0, 1, 2, 3], np.uint64), "not owned by shard 0"),
    (np.ones((4, 2), np.float32), np.array([0, 2, 4, 1 << 20], np.uint64), "outside model"),
])
def test_invalid_pushes_change_nothing(shard0, deltas, keys, text):
    c, ch = shard0
    before = _weights(c, KEYS)
    ch.request(Push("ctr", KEYS, _deltas(-1, 1)), 5)  # a valid push changes the state
    after_valid = _weights(c, KEYS)
    assert not np.array_equal(before, after_valid)
    frames = encode(Push("ctr", keys, deltas))
    reply = _raw(ch, frames)
    assert isinstance(reply, ErrorReply) and text in reply.message
    np.testing.assert_array_equal(_weights(c, KEYS), after_valid)


def test_unknown_model_and_unserved_op(shard0):
    c, ch = shard0
    with pytest.raises(RemoteError, match="unknown model 'nope'"):
        ch.request(Pull("nope", KEYS), 5)
    with pytest.raises(RemoteError, match="not served by this node"):
        ch.request(Predict("ctr", []), 5)


def test_hello_with_another_protocol_version_is_refused(shard0, monkeypatch):
    """A peer of another version is refused by name, and the refusal reaches the request that
    waits for it (the reply carries its request id): no timeout."""
    _c, ch = shard0
    other = PROTOCOL + 1
    with monkeypatch.context() as patched:
        patched.setattr(wire, "PROTOCOL", other)  # this end now encodes as version `other`
        with pytest.raises(RemoteError, match=f"protocol version mismatch: message speaks {other}"):
            ch.request(Hello(other, "worker"), 5)  # a dropped reply would be a Timeout
    assert ch.request(Hello(PROTOCOL, "worker"), 5).role == "shard"


def test_oversized_message_is_refused_and_node_keeps_serving(local_cluster):
    c = local_cluster(SMALL_SPEC + "\n[cluster]\nmax_message_bytes = 65536\n", shards=1,
                      replicas=0).start_all()
    big = Channel(c.address("shard", 0))
    big.send(Pull("ctr", np.arange(100_000, dtype=np.uint64)))  # 800 kB > 64 kB limit
    small = Channel(c.address("shard", 0))
    try:
        assert small.request(StatusRequest(), 5).info["state"] == "serving"
        reply = small.request(Pull("ctr", np.arange(10, dtype=np.uint64)), 5)
        assert reply.values.shape == (10, 2)  # FTRL state: z, n
    finally:
        big.close()
        small.close()
