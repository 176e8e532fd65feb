"""`deltaps up --secure` as a user runs it: every command finds its key in the cluster file's
key directory (or the environment), and a key of the wrong role or no member's key gets
nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from common.config import ClusterFile
from tests.e2e.test_cli import REPO, deltaps_cmd, run, workdir  # noqa: F401 (fixture)


def run_as(key_file, *args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(deltaps_cmd() + list(args), cwd=cwd, text=True, capture_output=True,
                          timeout=180, env={**os.environ, "PYTHONPATH": str(REPO),
                                            "DELTAPS_CURVE_SECRET_KEY_FILE": str(key_file)})


def test_secure_cluster_as_a_user_runs_it(workdir):  # noqa: F811
    out = run("up", "--secure", "--shards", "2", "--replicas", "1", cwd=workdir).stdout
    keys = workdir / ".deltaps" / "keys"
    assert "CURVE keys and HTTP token in" in out
    assert all((keys / f"{n}.key_secret").stat().st_mode & 0o077 == 0
               for n in ("server", "worker", "replica", "client", "admin"))
    cluster = ClusterFile.load(workdir / ".deltaps" / "cluster.json")
    assert cluster.spec.security.curve and cluster.spec.security.http_token_file

    summary = json.loads(run("train", "synthetic:20000:3", "--json", cwd=workdir)
                         .stdout.strip().splitlines()[-1])
    assert summary["events"] == 20000 and summary["logloss"] < 0.6
    rows = json.loads(run("status", "--json", cwd=workdir).stdout)
    assert [r["state"] for r in rows] == ["serving", "serving", "ready"]
    assert "all 2 replica/model/shard copies match" in run("verify", cwd=workdir).stdout
    assert run("snapshot", cwd=workdir).stdout.count("snap-") == 2
    answer = json.loads(run("predict", "{}", cwd=workdir).stdout)
    assert len(answer["predictions"]) == 1

    # the environment's key wins: a worker's key may not predict, a stranger's reaches nobody
    wrong = run_as(keys / "worker.key_secret", "predict", "{}", "--timeout", "2", cwd=workdir)
    assert wrong.returncode != 0 and "may not send 'predict'" in wrong.stderr
    stranger = workdir / "stranger"
    subprocess.run([sys.executable, "-m", "deploy.cli", "keys", "--out", str(stranger)],
                   cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    down = run_as(stranger / "admin.key_secret", "status", "--json", cwd=workdir)
    assert down.returncode == 1 and {r["state"] for r in json.loads(down.stdout)} == {"down"}
    assert [r["state"] for r in json.loads(run("status", "--json", cwd=workdir).stdout)] == \
        ["serving", "serving", "ready"]
    run("down", cwd=workdir)
