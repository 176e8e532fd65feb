"""Typed errors. Every error that crosses the wire carries one of these codes."""


class DeltapsError(Exception):
    """Base class; `code` is what an error reply carries on the wire."""

    code = "error"


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


_BY_CODE = {cls.code: cls for cls in (DeltapsError, MalformedMessage, UnknownOp, UnknownModel,
                                      ProtocolMismatch, InvalidValue, InvalidInstance, NotReady, MissingPush,
                                      Timeout, ConfigError)}


class RemoteError(DeltapsError):
    """An error reply from a peer, re-raised locally. `remote_code` names the peer's error class."""

    def __init__(self, remote_code: str, message: str):
        super().__init__(message)
        self.remote_code = remote_code
        self.code = remote_code


def error_class(code: str) -> type[DeltapsError]:
    return _BY_CODE.get(code, DeltapsError)
