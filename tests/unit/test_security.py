"""The [security] spec, key files and the role table, without sockets."""
from __future__ import annotations

import os

import pytest

from common.config import ClusterSpec, load_spec
from common.errors import ConfigError
from common.roles import ROLES, permitted
from common.security import (SECRET_ENV, SERVER_SECRET_ENV, curve_for, make_keys, make_token,
                             secured)
from common.transport import KeyPair, read_key_pair, read_public_key


def test_roles_allow_only_their_ops():
    assert permitted("worker", "push") and permitted("worker", "pull")
    assert not permitted("worker", "predict") and not permitted("worker", "shutdown")
    assert permitted("replica", "snapshot") and not permitted("replica", "push")
    assert permitted("client", "predict") and not permitted("client", "take_snapshot")
    assert not permitted("client", "status") and not permitted("client", "checksums")
    for op in ("shutdown", "take_snapshot", "checksums", "status", "push"):
        assert permitted("admin", op)
    assert not permitted("", "hello") and not permitted("stranger", "hello")
    assert all(permitted(role, "hello") for role in ROLES)


def test_key_files_are_private_and_secrets_never_shown(tmp_path):
    made = make_keys(tmp_path / "keys")
    assert set(made) == {"server", *ROLES}
    assert oct((tmp_path / "keys").stat().st_mode & 0o777) == "0o700"
    for name in made:
        secret = tmp_path / "keys" / f"{name}.key_secret"
        assert secret.stat().st_mode & 0o077 == 0
        pair = read_key_pair(secret)
        assert read_public_key(made[name]) == pair.public
        assert pair.secret.decode() not in repr(pair)
    loose = tmp_path / "keys" / "worker.key_secret"
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_key_pair(loose)
    with pytest.raises(ConfigError, match="no secret key"):
        read_key_pair(made["client"])
    token = make_token(tmp_path / "keys")
    assert os.stat(token).st_mode & 0o077 == 0 and len(open(token).read().strip()) >= 32


def test_security_section_parses_and_survives_the_cluster_file(tmp_path):
    keys = tmp_path / "keys"
    made = make_keys(keys)
    z85 = read_public_key(made["client"]).decode()
    spec = load_spec(text=f'[security]\ncurve = true\nkeys_dir = "{keys}"\n'
                          f'worker = ["worker.key"]\nclient = ["{z85}"]\n'
                          f'admin = ["{made["admin"]}"]\n')
    roles = spec.security.roles()
    assert roles[z85.encode()] == "client"
    assert roles[read_public_key(made["worker"])] == "worker"
    assert sorted(roles.values()) == ["admin", "client", "worker"]
    assert ClusterSpec.from_dict(spec.to_dict()).security == spec.security
    assert spec.security.server_public() == read_public_key(made["server"])


@pytest.mark.parametrize("text, match", [
    ('[security]\nkeyz_dir = "x"', "unknown key"),
    ('[security]\ncurve = "yes"', "expected bool"),
    ('[security]\ncurve = true', "needs server_public_key or keys_dir"),
    ('[security]\nhttp_tls_cert_file = "c.pem"', "go together"),
])
def test_bad_security_sections_are_named(text, match):
    with pytest.raises(ConfigError, match=match):
        load_spec(text=text)


def test_a_key_has_one_role(tmp_path):
    made = make_keys(tmp_path)
    spec = load_spec(text=f'[security]\ncurve = true\nkeys_dir = "{tmp_path}"\n'
                          f'worker = ["{made["worker"]}"]\nadmin = ["{made["worker"]}"]\n')
    with pytest.raises(ConfigError, match="both worker and admin"):
        spec.security.roles()


def test_each_process_finds_its_key(tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys)
    sec = secured(load_spec().security, keys)
    assert curve_for(load_spec().security, "worker") is None  # off by default
    worker = curve_for(sec, "worker", env={})
    assert worker.client == read_key_pair(keys / "worker.key_secret") and worker.server is None
    assert worker.server_public == read_public_key(keys / "server.key")
    shard = curve_for(sec, None, serves=True, env={})
    assert shard.server == read_key_pair(keys / "server.key_secret") and shard.client is None
    assert sorted(shard.roles.values()) == sorted(ROLES)
    other = tmp_path / "other"
    make_keys(other)
    env = {SECRET_ENV: str(other / "admin.key_secret"),
           SERVER_SECRET_ENV: str(other / "server.key_secret")}
    from_env = curve_for(sec, "replica", serves=True, env=env)
    assert from_env.client == read_key_pair(other / "admin.key_secret")
    assert from_env.server == read_key_pair(other / "server.key_secret")
    bare = secured(load_spec().security, keys)
    bare.keys_dir = ""
    bare.server_public_key = KeyPair.generate().public.decode()
    with pytest.raises(ConfigError, match="needs its secret key file"):
        curve_for(bare, "worker", env={})
