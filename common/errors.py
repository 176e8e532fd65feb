"""Typed errors. Every error that crosses the wire carries one of these codes.

A node turns an error into an error reply carrying the error's `code`; the peer that reads the
reply raises a `RemoteError` that is also an instance of the class that code names, so callers
catch a peer's refusal the way they catch their own (`except MissingPush`), not by comparing
code strings.
"""
from __future__ import annotations

_BY_CODE: dict[str, type["DeltapsError"]] = {}


class DeltapsError(Exception):
    """Base class; `code` is what an error reply carries on the wire.

    Every subclass that sets its own `code` is registered under it (wherever it is defined,
    e.g. `Unreachable` in the transport), so a code read off the wire finds its class; the
    first class to claim a code keeps it (those here, which every other module imports first).
    """

    code = "error"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)


_BY_CODE[DeltapsError.code] = DeltapsError


class MalformedMessage(DeltapsError):
    """A frame that does not decode, is too large, or has the wrong dtype/shape."""

    code = "malformed"


class UnknownOp(DeltapsError):
    code = "unknown_op"


class UnknownModel(DeltapsError):
    code = "unknown_model"


class ProtocolMismatch(DeltapsError):
    """The two ends speak different protocol versions."""

    code = "protocol_mismatch"


def find_model(models, name: str, holder: str):
    """`models[name]`, or UnknownModel naming what `holder` (e.g. "shard 0 holds") has."""
    try:
        return models[name]
    except KeyError:
        raise UnknownModel(f"unknown model {name!r}; {holder} {sorted(models)}") from None


class InvalidValue(DeltapsError):
    """A value that is well-formed but not acceptable: NaN/inf gradient, key outside the shard."""

    code = "invalid_value"


class InvalidInstance(DeltapsError):
    """A prediction instance or training event with features of the wrong type."""

    code = "invalid_instance"


class MissingPush(DeltapsError):
    """A pull or push that arrived before a push it must follow (lost in a reconnect)."""

    code = "missing_push"


class NotReady(DeltapsError):
    """A replica that does not yet hold every shard of the model."""

    code = "not_ready"


class Timeout(DeltapsError):
    code = "timeout"


class ConfigError(DeltapsError):
    code = "config"


class DeclarationConflict(DeltapsError):
    """A model's input was already declared otherwise (`common.declaration`): the first
    declaration stays, a different later one is refused."""

    code = "declaration_conflict"


class Forbidden(DeltapsError):
    """The peer's key is a cluster member, but its role may not send this op (common/roles.py);
    the request changed nothing."""

    code = "forbidden"


class InternalError(DeltapsError):
    """A handler failed with an unexpected exception (a bug in the node, not in the request);
    the node answers with this code and keeps running."""

    code = "internal"


def error_class(code: str) -> type[DeltapsError]:
    """The class registered for `code`; DeltapsError for a code this side does not know."""
    return _BY_CODE.get(code, DeltapsError)


_REMOTE: dict[type[DeltapsError], type["RemoteError"]] = {}


class RemoteError(DeltapsError):
    """An error reply from a peer, re-raised locally.

    `RemoteError(code, message)` makes an instance of both RemoteError and `error_class(code)`:
    `except MissingPush` catches a peer's missing_push, while `except RemoteError` still tells
    "the peer refused" apart from a local failure. `code` (and `remote_code`, the same) is the
    code the peer sent, also when this side has no class for it.
    """

    def __new__(cls, remote_code: str = "error", message: str = ""):
        if cls is RemoteError:
            cls = _remote_class(error_class(remote_code))
        return super().__new__(cls, remote_code, message)

    def __init__(self, remote_code: str, message: str):
        super().__init__(message)
        self.remote_code = remote_code
        self.code = remote_code

    def __reduce__(self):  # pickles as the plain call that rebuilds the same typed error
        return RemoteError, (self.remote_code, str(self))


def _remote_class(local: type[DeltapsError]) -> type[RemoteError]:
    """RemoteError mixed with `local`, made once per class."""
    if local is DeltapsError:
        return RemoteError
    remote = _REMOTE.get(local)
    if remote is None:
        remote = _REMOTE[local] = type(f"Remote{local.__name__}", (RemoteError, local),
                                       {"__module__": __name__})
    return remote
