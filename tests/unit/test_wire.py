import msgpack
import numpy as np
import pytest

from common import messages as m
from common.errors import InvalidValue, MalformedMessage, ProtocolMismatch, UnknownOp
from common.wire import decode, encode


def roundtrip(msg, rid=5):
    frames = [bytes(f) for f in encode(msg, rid)]
    got, got_rid = decode(frames)
    assert got_rid == rid
    return got


def test_every_registered_message_type_is_covered():
    assert set(m.REGISTRY) >= {"hello", "pull", "push", "snapshot", "update", "predict", "error"}


def test_push_roundtrip_keeps_arrays_exactly():
    keys = np.array([1, 5, 2**63 + 7], dtype=np.uint64)
    grads = np.array([0.25, -1e-30, 3e30], dtype=np.float32)
    got = roundtrip(m.Push("ctr", keys, grads))
    assert got.model == "ctr"
    np.testing.assert_array_equal(got.keys, keys)
    np.testing.assert_array_equal(got.grads, grads)
    assert got.keys.dtype == np.dtype("<u8")


def test_header_only_and_empty_arrays_roundtrip():
    assert roundtrip(m.Heartbeat(3, 9, {"a": 7})) == m.Heartbeat(3, 9, {"a": 7})
    got = roundtrip(m.Pull("x", np.zeros(0, np.uint64)))
    assert got.keys.shape == (0,)


def test_large_arrays_are_sent_without_copy():
    values = np.arange(100_000, dtype=np.float32)
    frames = encode(m.PullReply("x", 1, values))
    assert isinstance(frames[1], memoryview)
    assert np.shares_memory(np.frombuffer(frames[1], np.float32), values)


def test_small_messages_travel_as_one_frame_and_decode_the_same():
    keys = np.arange(5, dtype=np.uint64)
    frames = encode(m.Push("x", keys, np.ones(5, np.float32)))
    assert len(frames) == 1
    got, _ = decode(frames)
    np.testing.assert_array_equal(got.keys, keys)
    header = msgpack.unpackb(frames[0])
    header["data"] = header["data"][:1]
    with pytest.raises(MalformedMessage, match="one bytes entry per array"):
        decode([msgpack.packb(header)])


def test_wrong_dtype_is_converted_on_encode_and_refused_on_decode():
    frames = encode(m.Push("x", np.arange(5000, dtype=np.int32), np.ones(5000, np.float64)))
    got, _ = decode(frames)
    assert got.keys.dtype == np.uint64 and got.grads.dtype == np.float32
    header = msgpack.unpackb(frames[0])
    header["arrays"][1][0] = "<f8"
    with pytest.raises(MalformedMessage, match="must be <f4"):
        decode([msgpack.packb(header), frames[1], b"\0" * 40000])


def test_decode_refuses_bad_messages_with_a_reason():
    with pytest.raises(UnknownOp):
        decode([msgpack.packb({"op": "nope", "v": m.PROTOCOL})])
    with pytest.raises(ProtocolMismatch, match="speaks 0"):
        decode([msgpack.packb({"op": "status", "v": 0})])
    with pytest.raises(MalformedMessage, match="expected 3 frames"):
        decode(encode(m.Push("x", np.ones(5000, np.uint64), np.ones(5000, np.float32)))[:2])
    with pytest.raises(MalformedMessage, match="exceeds the limit"):
        decode(encode(m.Pull("x", np.ones(100, np.uint64))), max_bytes=100)
    with pytest.raises(InvalidValue, match="NaN"):
        decode(encode(m.Push("x", np.ones(1, np.uint64), np.array([np.nan], np.float32))))


def test_error_replies_are_readable_across_protocol_versions():
    got, _ = decode([msgpack.packb({"op": "error", "v": 99, "code": "x", "message": "y",
                                    "arrays": []})])
    assert got == m.ErrorReply("x", "y")
