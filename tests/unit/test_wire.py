"""The wire codec: every message type round-trips exactly; bad input is refused with a reason."""
import dataclasses
from typing import get_type_hints

import msgpack
import numpy as np
import pytest

from common.errors import InvalidValue, MalformedMessage, ProtocolMismatch, UnknownOp
from common.messages import (PROTOCOL, REGISTRY, ErrorReply, Heartbeat, Pull, PullReply, Push,
                             header_fields)
from common.wire import INLINE_BYTES, decode, encode


def roundtrip(msg, rid=5):
    frames = [bytes(f) for f in encode(msg, rid)]
    got, got_rid = decode(frames)
    assert got_rid == rid
    return got


# a valid header value of each annotated type, and one of another type for each
SAMPLES = {int: 2**40 + 3, str: "ctr-é", float: 12.5, dict: {"a": [1, 2.5, "x"], "b": {}},
           list: [[1, 2], "z", 0.25], bytes: b'{"label": 1}\n\x00\xff'}
WRONG = {int: "7", str: 7, float: "1.5", dict: [1], list: {"a": 1}, bytes: "text"}


def sample(cls, n: int):
    """An instance of message type `cls` with a value in every field: header fields from their
    annotation, arrays of `n` entries of the dtype ARRAYS names."""
    hints = get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in cls.ARRAYS:
            values[f.name] = (np.arange(n) * 3 + 1).astype(cls.ARRAYS[f.name])
        else:
            assert hints[f.name] in SAMPLES, f"{cls.__name__}.{f.name}: no sample value"
            values[f.name] = SAMPLES[hints[f.name]]
    return cls(**values)


def assert_same_message(got, want):
    assert type(got) is type(want)
    for f in dataclasses.fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name in want.ARRAYS:
            assert a.dtype == np.dtype(want.ARRAYS[f.name]).newbyteorder("<"), f.name
            assert a.shape == b.shape and np.array_equal(a, b), f.name
        else:
            assert type(a) is type(b) and a == b, f.name


@pytest.mark.parametrize("n", [0, 3, INLINE_BYTES])  # no entries, one frame, one frame per array
@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_registered_message_type_roundtrips_every_field(op, n):
    want = sample(REGISTRY[op], n)
    frames = encode(want, 11)
    arrays = REGISTRY[op].ARRAYS
    nbytes = sum(n * np.dtype(dtype).itemsize for dtype in arrays.values())
    assert len(frames) == (1 if nbytes <= INLINE_BYTES else 1 + len(arrays))
    got, rid = decode([bytes(f) for f in frames])
    assert rid == 11
    assert_same_message(got, want)


def test_the_round_trip_covers_the_protocol():
    assert set(REGISTRY) >= {"hello", "pull", "push", "snapshot", "update", "predict", "error"}


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_header_field_is_type_checked(op):
    cls = REGISTRY[op]
    hints = get_type_hints(cls)
    frames = encode(sample(cls, 2))
    for name in header_fields(cls):
        header = msgpack.unpackb(frames[0])
        header[name] = WRONG[hints[name]]
        with pytest.raises(MalformedMessage, match=f"field {name!r} must be"):
            decode([msgpack.packb(header)])


def test_a_float_field_may_arrive_as_an_integer_but_no_field_as_a_bool():
    from common.messages import PredictReply
    header = msgpack.unpackb(encode(PredictReply("ctr", [1], 0))[0])
    assert decode([msgpack.packb(header)])[0].staleness_ms == 0
    header["staleness_ms"] = True
    with pytest.raises(MalformedMessage, match="must be float"):
        decode([msgpack.packb(header)])


def test_push_roundtrip_keeps_arrays_exactly():
    keys = np.array([1, 5, 2**63 + 7], dtype=np.uint64)
    deltas = np.array([[0.25, 1], [-1e-30, 2], [3e30, 3]], dtype=np.float32)
    got = roundtrip(Push("ctr", keys, deltas))
    assert got.model == "ctr"
    np.testing.assert_array_equal(got.keys, keys)
    np.testing.assert_array_equal(got.deltas, deltas)
    assert got.deltas.shape == (3, 2)
    assert got.keys.dtype == np.dtype("<u8")


def test_header_only_and_empty_arrays_roundtrip():
    assert roundtrip(Heartbeat(3, 9, {"a": 7})) == Heartbeat(3, 9, {"a": 7})
    got = roundtrip(Pull("x", np.zeros(0, np.uint64)))
    assert got.keys.shape == (0,)


def test_large_arrays_are_sent_without_copy():
    values = np.arange(100_000, dtype=np.float32)
    frames = encode(PullReply("x", 1, values))
    assert isinstance(frames[1], memoryview)
    assert np.shares_memory(np.frombuffer(frames[1], np.float32), values)


def test_small_messages_travel_as_one_frame_and_decode_the_same():
    keys = np.arange(5, dtype=np.uint64)
    frames = encode(Push("x", keys, np.ones(5, np.float32)))
    assert len(frames) == 1
    got, _ = decode(frames)
    np.testing.assert_array_equal(got.keys, keys)
    header = msgpack.unpackb(frames[0])
    header["data"] = header["data"][:1]
    with pytest.raises(MalformedMessage, match="one bytes entry per array"):
        decode([msgpack.packb(header)])


def test_wrong_dtype_is_converted_on_encode_and_refused_on_decode():
    frames = encode(Push("x", np.arange(5000, dtype=np.int32), np.ones(5000, np.float64)))
    got, _ = decode(frames)
    assert got.keys.dtype == np.uint64 and got.deltas.dtype == np.float32
    header = msgpack.unpackb(frames[0])
    header["arrays"][1][0] = "<f8"
    with pytest.raises(MalformedMessage, match="must be <f4"):
        decode([msgpack.packb(header), frames[1], b"\0" * 40000])


def test_decode_refuses_bad_messages_with_a_reason():
    with pytest.raises(UnknownOp):
        decode([msgpack.packb({"op": "nope", "v": PROTOCOL})])
    with pytest.raises(ProtocolMismatch, match="speaks 0"):
        decode([msgpack.packb({"op": "status", "v": 0})])
    with pytest.raises(MalformedMessage, match="expected 3 frames"):
        decode(encode(Push("x", np.ones(5000, np.uint64), np.ones(5000, np.float32)))[:2])
    with pytest.raises(MalformedMessage, match="exceeds the limit"):
        decode(encode(Pull("x", np.ones(100, np.uint64))), max_bytes=100)
    with pytest.raises(InvalidValue, match="NaN"):
        decode(encode(Push("x", np.ones(1, np.uint64), np.array([np.nan], np.float32))))


def test_error_replies_are_readable_across_protocol_versions():
    got, _ = decode([msgpack.packb({"op": "error", "v": 99, "code": "x", "message": "y",
                                    "arrays": []})])
    assert got == ErrorReply("x", "y")
