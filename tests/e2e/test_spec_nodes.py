"""Nodes started as the Kubernetes manifests start them (deploy/k8s): `deltaps shard|serve|
train --spec` with no cluster file, each shard found by the spec's shard_hosts, its index from
the environment, every node's /metrics on the address given. Each shard gets its own loopback
address (127.0.0.1K), as each pod has its own IP, and all listen on the same ports."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from deploy.layout import free_ports
from tests.e2e.test_cli import REPO, deltaps_cmd, run

SHARDS = 2


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read().decode()


def ready(url: str, deadline: float, procs) -> None:
    while True:
        try:
            if json.loads(fetch(url + "/readyz"))["ready"]:
                return
        except OSError:
            pass
        for p in procs:
            assert p.poll() is None, f"a node exited with {p.returncode}"
        assert time.monotonic() < deadline, f"{url} not ready"
        time.sleep(0.1)


def test_nodes_find_each_other_by_the_spec_shard_hosts(tmp_path):
    base, http, metrics = free_ports("127.0.0.1", 3)
    spec = tmp_path / "cluster.toml"
    spec.write_text(f'[cluster]\nshards = {SHARDS}\nbase_port = {base}\n'
                    f'data_dir = "{tmp_path / "data"}"\nshard_hosts = "127.0.0.1{{index}}"\n'
                    '[models.ctr]\nbits = 16\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    try:
        for k in range(SHARDS):
            host = f"127.0.0.1{k}"
            procs.append(subprocess.Popen(
                deltaps_cmd() + ["shard", "--spec", str(spec), "--listen", f"tcp://{host}:{base}",
                                 "--publish", f"tcp://{host}:{base + 1}",
                                 "--metrics", f"{host}:{metrics}"],
                cwd=tmp_path, env={**env, "DELTAPS_SHARD_INDEX": str(k)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            deltaps_cmd() + ["serve", "--spec", str(spec), "--index", "0",
                             "--listen", f"tcp://127.0.0.1:{base + 2}",
                             "--http", f"127.0.0.1:{http}", "--metrics", f"127.0.0.1:{metrics}"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        for k in range(SHARDS):
            ready(f"http://127.0.0.1{k}:{metrics}", deadline, procs)
        ready(f"http://127.0.0.1:{http}", deadline, procs)

        out = run("train", "synthetic:3000:1", "--spec", str(spec), "--json", "--nice", "0",
                  cwd=tmp_path)
        seqs = json.loads(out.stdout.strip().splitlines()[-1])["last_seqs"]
        assert len(seqs) == SHARDS and all(int(s) > 0 for s in seqs.values())
        for k in range(SHARDS):
            text = fetch(f"http://127.0.0.1{k}:{metrics}/metrics")
            assert f'deltaps_node_info{{index="{k}",role="shard"}} 1.0' in text
            assert 'deltaps_requests_total{op="push",outcome="ok"}' in text
        want = sum(int(s) for s in seqs.values())
        while f'deltaps_replica_model_version{{model="ctr"}} {float(want)}' not in fetch(
                f"http://127.0.0.1:{metrics}/metrics"):
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(20) for p in procs]
    assert codes == [0] * len(procs)


@pytest.mark.parametrize("hosts", ["deltaps-shard.example", "{index}.example"])
def test_shard_hosts_without_index_or_base_port_are_refused(hosts, tmp_path):
    from common.config import load_spec
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match="shard_hosts"):
        load_spec(text=f'[cluster]\nshard_hosts = "{hosts}"\n')
