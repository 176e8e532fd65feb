"""The spec's `[security]` section, and the CURVE keys one process of a given role uses.

Every node and command reads the same spec, so one table says who is a member: the servers'
key pair (shards and replicas bind with it, so a client checks it talks to this cluster) and
the public keys admitted per role. A process finds its own secret key in the environment
(`DELTAPS_CURVE_SECRET_KEY_FILE`, a pod's mounted Secret) or else as `<keys_dir>/<role>.key_secret`;
a server's in `DELTAPS_CURVE_SERVER_SECRET_KEY_FILE` or `server_secret_key_file` or
`<keys_dir>/server.key_secret`. A key in the spec is Z85 text (40 characters) or the path of
a `.key` file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from common.roles import ROLES
from common.transport import Curve, read_key_pair, read_public_key, use_curve, write_key_pair

SECRET_ENV = "DELTAPS_CURVE_SECRET_KEY_FILE"
SERVER_SECRET_ENV = "DELTAPS_CURVE_SERVER_SECRET_KEY_FILE"
SERVER = "server"


@dataclass
class SecuritySpec:
    """`[security]` of the spec (common/defaults.toml documents each key)."""

    curve: bool = False
    keys_dir: str = ""
    server_public_key: str = ""
    server_secret_key_file: str = ""
    worker: list[str] = field(default_factory=list)
    replica: list[str] = field(default_factory=list)
    client: list[str] = field(default_factory=list)
    producer: list[str] = field(default_factory=list)
    admin: list[str] = field(default_factory=list)
    http_token_file: str = ""
    http_tls_cert_file: str = ""
    http_tls_key_file: str = ""

    def check(self) -> None:
        if bool(self.http_tls_cert_file) != bool(self.http_tls_key_file):
            raise ConfigError("[security] http_tls_cert_file and http_tls_key_file go together")
        if self.curve and not (self.server_public_key or self.keys_dir):
            raise ConfigError("[security] curve = true needs server_public_key or keys_dir")

    def roles(self) -> dict[bytes, str]:
        """Admitted public key (Z85) -> role; a key listed under two roles is refused."""
        out: dict[bytes, str] = {}
        for role in ROLES:
            for entry in getattr(self, role):
                key = _public_key(entry, self.keys_dir, f"[security] {role}")
                if out.get(key, role) != role:
                    raise ConfigError(f"[security] one key is listed under both {out[key]} "
                                      f"and {role}: a key has one role")
                out[key] = role
        return out

    def server_public(self) -> bytes:
        if self.server_public_key:
            return _public_key(self.server_public_key, self.keys_dir, "[security] server key")
        return _public_key(str(Path(self.keys_dir) / f"{SERVER}.key"), "", "[security] keys_dir")


_Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _public_key(entry: str, base: str, what: str) -> bytes:
    """A public key given as its 40 Z85 characters, or as a key file (absolute, or under
    `base`). Z85 may hold "/", so a file that exists wins; text that could only be a key is
    one."""
    path = Path(entry)
    if not path.is_absolute() and base and not path.exists():
        path = Path(base) / path
    if not path.exists() and len(entry) == 40 and set(entry) <= _Z85:
        return entry.encode("ascii")
    try:
        return read_public_key(path)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def curve_for(sec: SecuritySpec, role: str | None, serves: bool = False,
              env: dict | None = None) -> Curve | None:
    """The CURVE setup of a process that connects as `role` (and, with `serves`, binds with the
    server key); None when `[security] curve` is off."""
    if not sec.curve:
        return None
    env = os.environ if env is None else env
    server = None
    if serves:
        path = (env.get(SERVER_SECRET_ENV) or sec.server_secret_key_file
                or _in_keys_dir(sec, SERVER))
        server = read_key_pair(path)
    own = env.get(SECRET_ENV) or (_in_keys_dir(sec, role) if sec.keys_dir and role else "")
    client = read_key_pair(own) if own else None
    if client is None and not serves:
        raise ConfigError(f"CURVE is on: a {role} needs its secret key file ({SECRET_ENV} or "
                          f"[security] keys_dir)")
    return Curve(server=server, client=client, server_public=sec.server_public(),
                 roles=sec.roles() if serves else {})


def _in_keys_dir(sec: SecuritySpec, name: str) -> str:
    if not sec.keys_dir:
        raise ConfigError(f"CURVE is on but no {name} secret key file is given "
                          f"([security] keys_dir or the environment)")
    return str(Path(sec.keys_dir) / f"{name}.key_secret")


def make_keys(directory: str | Path) -> dict[str, str]:
    """A fresh key pair per role and for the servers in `directory`; role -> public key file."""
    return {name: str(write_key_pair(directory, name)[0]) for name in (SERVER, *ROLES)}


def make_token(directory: str | Path) -> str:
    """A fresh random bearer token in `directory`/http.token (mode 0600); returns its path."""
    import secrets  # here: every process imports this module, few make tokens

    path = Path(directory) / "http.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return str(path.resolve())


def secured(sec: SecuritySpec, keys_dir: str | Path, token: str = "") -> SecuritySpec:
    """`sec` with CURVE on and every role admitting its key of `keys_dir` (made by make_keys),
    and HTTP asking for the bearer token in file `token` if given."""
    keys_dir = str(Path(keys_dir).resolve())
    return SecuritySpec(**{**sec.__dict__, "curve": True, "keys_dir": keys_dir,
                           "server_public_key": "", "server_secret_key_file": "",
                           "http_token_file": token or sec.http_token_file,
                           **{role: [str(Path(keys_dir) / f"{role}.key")] for role in ROLES}})


def install(sec: SecuritySpec, role: str | None, serves: bool = False) -> None:
    """Turn CURVE on (or leave it off) for this process as `role`; call before making sockets."""
    use_curve(curve_for(sec, role, serves))
