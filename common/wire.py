"""The wire codec: a msgpack header frame followed by one raw frame per array.

    frame 0: msgpack {"op", "v", "rid", <header fields>, "arrays": [[dtype, shape], ...]}
    frame 1..: the arrays' bytes, C order, little-endian, sent without copying

Small messages (arrays of at most INLINE_BYTES in all) carry the arrays' bytes inside the
header instead, as "data": [bytes, ...], and travel as one frame: for small arrays one frame
is cheaper than a multipart message (measured: DESIGN §6), and a mini-batch of a few events
sends a handful of keys per shard.

Decoding trusts nothing: the header must be a map with a known op, this node's protocol
version and every required field, each field of the type its dataclass annotation names, each
array frame must have exactly the bytes its declared dtype and shape need, the dtype must be
the one the message type requires, and arrays in `FINITE` must hold no NaN or inf (the only
such check: it guards every message, whoever handles it). Any violation raises
`MalformedMessage` (or `ProtocolMismatch`, `InvalidValue`) naming the problem; decoding never
half-succeeds.
"""
from __future__ import annotations

import math
from dataclasses import MISSING
from types import UnionType
from typing import Any, Sequence, Union, get_args, get_origin, get_type_hints

import msgpack
import numpy as np

from common.errors import InvalidValue, MalformedMessage, ProtocolMismatch, UnknownOp
from common.messages import PROTOCOL, REGISTRY, ErrorReply, Message, header_fields

MAX_HEADER_BYTES = 64 << 20
INLINE_BYTES = 16 << 10
_MAX_DIMS = 4


class _Layout:
    """What the codec needs to know of one message type, worked out once from its dataclass
    (small messages are decoded so often that per-message lookups would add up). Header field
    types come from the annotations, so every field is checked and a new field needs no
    second declaration here."""

    def __init__(self, cls: type[Message]):
        hints = get_type_hints(cls)
        self.fields = header_fields(cls)
        self.required = [f for f in self.fields if not _has_default(cls, f)]
        self.types = [(f, *_accepted(cls, f, hints[f])) for f in self.fields]
        annotated = {f for f in cls.__dataclass_fields__ if hints[f] is np.ndarray}
        if annotated != set(cls.ARRAYS):
            raise TypeError(f"{cls.__name__}: fields annotated np.ndarray {sorted(annotated)} "
                            f"must be exactly the ARRAYS {sorted(cls.ARRAYS)}")
        self.arrays = [(name, np.dtype(want).newbyteorder("<")) for name, want in
                       cls.ARRAYS.items()]


_LAYOUTS: dict[type, _Layout] = {}
_DTYPES: dict[str, np.dtype] = {}


def _layout(cls: type[Message]) -> _Layout:
    layout = _LAYOUTS.get(cls)
    if layout is None:
        layout = _LAYOUTS[cls] = _Layout(cls)
    return layout


def encode(msg: Message, rid: int = 0) -> list:
    """Frames for `msg`; array frames are memoryviews of the arrays (no copy)."""
    cls = type(msg)
    layout = _layout(cls)
    header = {"op": cls.op, "v": PROTOCOL, "rid": rid}
    for name in layout.fields:
        header[name] = getattr(msg, name)
    arrays = [np.ascontiguousarray(getattr(msg, name), dtype=dtype)
              for name, dtype in layout.arrays]
    header["arrays"] = [[a.dtype.str, list(a.shape)] for a in arrays]
    if sum(a.nbytes for a in arrays) <= INLINE_BYTES:
        if arrays:
            header["data"] = [a.tobytes() for a in arrays]
        return [msgpack.packb(header, use_bin_type=True)]
    frames: list = [msgpack.packb(header, use_bin_type=True)]
    frames += [memoryview(a).cast("B") if a.size else b"" for a in arrays]
    return frames


def request_id(frames: Sequence) -> int:
    """The request id of a message that may not decode, so that its error reply still reaches
    the request that is waiting for it (0 when the header has none to give)."""
    try:
        header = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
    except Exception:  # msgpack raises several unrelated types
        return 0
    rid = header.get("rid", 0) if isinstance(header, dict) else 0
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else 0


def decode(frames: Sequence, max_bytes: int | None = None) -> tuple[Message, int]:
    """Parse and validate frames into (message, request id)."""
    if not frames:
        raise MalformedMessage("empty message")
    total = sum(len(f) for f in frames)
    if max_bytes is not None and total > max_bytes:
        raise MalformedMessage(f"message of {total} bytes exceeds the limit of {max_bytes}")
    raw = frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise MalformedMessage(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedMessage(f"header is not valid msgpack: {exc}") from None
    if not isinstance(header, dict):
        raise MalformedMessage("header is not a map")
    op = header.get("op")
    cls = REGISTRY.get(op) if isinstance(op, str) else None
    if cls is None:
        raise UnknownOp(f"unknown op {op!r}")
    _check_version(cls, header.get("v"))
    rid = header.get("rid", 0)
    if not isinstance(rid, int):
        raise MalformedMessage("rid must be an integer")
    layout = _layout(cls)
    kwargs = {name: header[name] for name in layout.fields if name in header}
    for name in layout.required:
        if name not in kwargs:
            raise MalformedMessage(f"{op}: missing field {name!r}")
    for name, accepted, label in layout.types:
        value = kwargs.get(name, _ABSENT)
        if value is not _ABSENT and type(value) not in accepted:
            raise MalformedMessage(f"{cls.op}: field {name!r} must be {label}, "
                                   f"got {type(value).__name__}")
    specs = header.get("arrays")
    if not isinstance(specs, list) or len(specs) != len(cls.ARRAYS):
        raise MalformedMessage(f"{op}: expected {len(cls.ARRAYS)} array(s) in the header")
    data = header.get("data")
    if data is not None:
        if len(frames) != 1 or not isinstance(data, list) or len(data) != len(cls.ARRAYS) \
                or not all(isinstance(d, bytes) for d in data):
            raise MalformedMessage(f"{op}: inline data must be one bytes entry per array, "
                                   "in a single frame")
        frames = [raw, *data]
    elif cls.ARRAYS and len(frames) != 1 + len(cls.ARRAYS):
        raise MalformedMessage(f"{op}: expected {1 + len(cls.ARRAYS)} frames, got {len(frames)}")
    elif not cls.ARRAYS and len(frames) != 1:
        raise MalformedMessage(f"{op}: expected 1 frame, got {len(frames)}")
    for (name, want), spec, frame in zip(layout.arrays, specs, frames[1:]):
        kwargs[name] = _array(op, name, want, spec, frame)
    for name in cls.FINITE:
        if not np.isfinite(kwargs[name]).all():
            raise InvalidValue(f"{op}: {name} contains NaN or inf")
    return cls(**kwargs), rid


def _check_version(cls: type[Message], version) -> None:
    """The one protocol version check: every header carries the sender's version. Error
    replies are readable across versions, so a peer learns why it was refused."""
    if version != PROTOCOL and cls is not ErrorReply:
        raise ProtocolMismatch(f"protocol version mismatch: message speaks {version!r}, "
                               f"this node speaks {PROTOCOL}")


# msgpack decodes to exactly these types; a field annotated float may arrive as an int
# (msgpack keeps 0 and 0.0 apart), and a bool is never an int here
_WIDER = {float: (float, int)}


def _accepted(cls, name: str, hint) -> tuple[frozenset, str]:
    """The exact Python types msgpack may decode field `name` to, and how to name them."""
    members = get_args(hint) if isinstance(hint, UnionType) or get_origin(hint) is Union \
        else (hint,)
    accepted = set()
    for member in members:
        member = get_origin(member) or member
        if not isinstance(member, type) or member in (object, Any):
            raise TypeError(f"{cls.__name__}.{name}: the codec cannot check {hint!r}")
        accepted.update(_WIDER.get(member, (member,)))
    label = " or ".join("None" if t is type(None) else t.__name__
                        for t in (get_origin(m) or m for m in members))
    return frozenset(accepted), label


def _has_default(cls, name: str) -> bool:
    f = cls.__dataclass_fields__[name]
    return f.default is not MISSING or f.default_factory is not MISSING


_ABSENT = object()


def _array(op: str, name: str, expected: np.dtype, spec, frame) -> np.ndarray:
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str)
            and isinstance(spec[1], list) and len(spec[1]) <= _MAX_DIMS
            and all(isinstance(d, int) and d >= 0 for d in spec[1])):
        raise MalformedMessage(f"{op}: bad array spec for {name!r}")
    dtype = _DTYPES.get(spec[0])
    if dtype is None:
        try:
            dtype = np.dtype(spec[0])
        except TypeError:
            raise MalformedMessage(f"{op}: {name!r} has unknown dtype {spec[0]!r}") from None
        if len(_DTYPES) < 64:
            _DTYPES[spec[0]] = dtype
    if dtype != expected:
        raise MalformedMessage(f"{op}: {name!r} must be {expected.str}, got {dtype.str}")
    shape = tuple(spec[1])
    count = math.prod(shape)
    buf = memoryview(frame)
    if buf.nbytes != count * dtype.itemsize:
        raise MalformedMessage(f"{op}: {name!r} frame has {buf.nbytes} bytes, "
                               f"shape {list(shape)} of {dtype.str} needs {count * dtype.itemsize}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape) if count else np.zeros(shape, dtype)
