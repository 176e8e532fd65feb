"""CurveZMQ membership: encrypted, authenticated sockets and the ZAP handler that admits keys.

A process installs one `Curve` (`use_curve`) before it makes sockets; from then on every
socket it makes is secured by its kind. Sockets that bind (a node's ROUTER, a shard's update
PUB) are CURVE servers with the cluster's server key pair, and ZAP (pyzmq's
`ThreadAuthenticator`, one per process context) admits a client only if its public key is
listed in `roles`: a stranger's handshake fails and it never gets a connection, so not one of
its messages reaches a handler. The update PUB admits only the roles that follow updates
(replica, admin): a SUB socket cannot be answered "forbidden", so a wrong role is refused at
the handshake there. Sockets that connect (DEALER, SUB) are CURVE clients with the process's
own key pair and the servers' public key.

ZAP gives each admitted connection the key's role as its User-Id, which every message it
carries has as metadata (`peer_role`); the request server checks the op against the role
(common/roles.py). A connection over inproc (the replica's own HTTP thread) has no handshake
and no User-Id: it is this process talking to itself.

Keys are Z85 text. Secret keys live only in `KeyPair.secret`, which no repr or status shows;
the authenticator logs through a logger held at WARNING, so no key is written to a log.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from common.errors import ConfigError

REQUESTS_DOMAIN = b"deltaps"
UPDATES_DOMAIN = b"deltaps.updates"
UPDATE_ROLES = ("replica", "admin")  # who may subscribe to a shard's update stream
INPROC = "inproc"  # the role of a peer in this process (no handshake, no User-Id)

_zap_log = logging.getLogger("deltaps.zap")
_zap_log.setLevel(logging.WARNING)  # pyzmq's debug lines name keys


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair as Z85 bytes (40 characters each); the secret is never shown."""

    public: bytes
    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> "KeyPair":
        public, secret = zmq.curve_keypair()
        return cls(public, secret)


@dataclass(frozen=True)
class Curve:
    """What one process needs to speak CURVE.

    `server`: the key pair of sockets that bind (None in a process that only connects);
    `client` and `server_public`: the pair sockets that connect present, and the servers' public
    key they expect; `roles`: admitted client public key (Z85) -> role, for servers.
    """

    server: KeyPair | None = None
    client: KeyPair | None = None
    server_public: bytes | None = None
    roles: dict[bytes, str] = field(default_factory=dict, repr=False)


class Refusals:
    """Handshakes ZAP refused, by reason; read by a node's status."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, reason: str) -> None:
        with self._lock:
            self.counts[reason] = self.counts.get(reason, 0) + 1

    def total(self) -> int:
        return sum(self.counts.values())


refusals = Refusals()
_current: Curve | None = None
_client_override: KeyPair | None = None
_auth = None  # the running ZAP handler of a server process
_auth_lock = threading.Lock()


def _role_authenticator(ctx: zmq.Context, roles: dict[bytes, str]):
    """The ZAP handler of a server process. zmq.auth loads asyncio, so it is imported only by
    a process that runs CURVE."""
    import zmq.auth.thread

    class RoleAuthenticator(zmq.auth.thread.ThreadAuthenticator):
        """Admits listed keys (updates: only the roles that follow them); User-Id is the role."""

        def __init__(self):
            super().__init__(ctx, log=_zap_log)
            self.roles = dict(roles)

        def callback(self, domain: str, key: bytes) -> bool:
            role = self.roles.get(key)
            if role is None:
                refusals.add("unknown_key")
                return False
            if domain == UPDATES_DOMAIN.decode() and role not in UPDATE_ROLES:
                refusals.add(f"{role}_subscribe")
                return False
            return True

        def curve_user_id(self, client_public_key: bytes) -> str:
            from zmq.utils import z85
            return self.roles.get(z85.encode(client_public_key), "")

    return RoleAuthenticator()


def use_curve(curve: Curve | None, ctx: zmq.Context | None = None) -> None:
    """Secure every socket this process makes from now on with `curve` (None: plain TCP).
    A server's authenticator starts here, before any socket binds."""
    global _current, _auth
    ctx = ctx or zmq.Context.instance()
    with _auth_lock:
        if _auth is not None:
            _auth.stop()
            _auth = None
        _current = curve
        if curve is not None and curve.server is not None:
            _auth = _role_authenticator(ctx, curve.roles)
            _auth.start()
            for domain in (REQUESTS_DOMAIN, UPDATES_DOMAIN):
                _auth.configure_curve_callback(domain.decode(), _auth)


def current() -> Curve | None:
    return _current


@atexit.register
def stop_authenticator() -> None:
    """Stop the ZAP thread (before the zmq context is destroyed; safe to call twice)."""
    global _auth
    with _auth_lock:
        if _auth is not None:
            _auth.stop()
            _auth = None


@contextlib.contextmanager
def client_key(pair: KeyPair):
    """Sockets made inside connect with `pair` instead of the process's key (a test playing a
    stranger or another role from one process)."""
    global _client_override
    before, _client_override = _client_override, pair
    try:
        yield
    finally:
        _client_override = before


def secure(sock: zmq.Socket, kind: int) -> None:
    """Make `sock` a CURVE server (ROUTER, PUB) or client (DEALER, SUB) if CURVE is on."""
    curve = _current
    if curve is None:
        return
    if kind in (zmq.ROUTER, zmq.PUB):
        if curve.server is None:
            raise ConfigError("CURVE is on but this process has no server key to bind with")
        sock.curve_server = True
        sock.curve_publickey = curve.server.public
        sock.curve_secretkey = curve.server.secret
        sock.zap_domain = UPDATES_DOMAIN if kind == zmq.PUB else REQUESTS_DOMAIN
    else:
        pair = _client_override or curve.client
        if pair is None or curve.server_public is None:
            raise ConfigError("CURVE is on but this process has no key of its own to connect "
                              "with (set DELTAPS_CURVE_SECRET_KEY_FILE or [security] keys)")
        sock.curve_serverkey = curve.server_public
        sock.curve_publickey = pair.public
        sock.curve_secretkey = pair.secret


def peer_role(frame: zmq.Frame) -> str | None:
    """The role ZAP gave the connection `frame` came on; INPROC for this process's own
    sockets; None when CURVE is off."""
    if _current is None:
        return None
    try:
        return frame.get("User-Id") or ""
    except zmq.ZMQError:  # no metadata: an inproc peer, i.e. this process
        return INPROC


# --- key files -------------------------------------------------------------------------------

def write_key_pair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create `name.key` (public) and `name.key_secret` (mode 0600) in `directory` (0700)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    old = os.umask(0o077)  # the secret file is never readable by others, not for an instant
    try:
        import zmq.auth
        public, secret = zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def read_public_key(path: str | Path) -> bytes:
    """The public key of a `.key` or `.key_secret` file."""
    try:
        import zmq.auth
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE key file {path}: {exc}") from None
    return public


def read_key_pair(path: str | Path) -> KeyPair:
    """The key pair of a `.key_secret` file (refused if others may read it)."""
    path = Path(path)
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"CURVE secret key file {path} is readable by others: "
                              f"chmod 600 it")
        import zmq.auth
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE secret key file {path}: {exc}") from None
    if secret is None:
        raise ConfigError(f"{path} holds no secret key (a .key_secret file is needed)")
    return KeyPair(public, secret)
