"""The `deltaps` command exactly as README shows it: up, train, status, predict, verify, down."""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import ClusterFile
from common.cpus import format_cpu_list
from deploy.runtime.priority import time_slice_ms
from worker.helper import HELPER_NICE

REPO = Path(__file__).resolve().parents[2]


def deltaps_cmd() -> list[str]:
    beside = Path(sys.executable).parent / "deltaps"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("deltaps")
    return [found] if found else [sys.executable, "-m", "deploy.cli"]


def run(*args, input=None, check=True, cwd) -> subprocess.CompletedProcess:
    proc = subprocess.run(deltaps_cmd() + list(args), cwd=cwd, input=input, text=True,
                          capture_output=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if check and proc.returncode != 0:
        raise AssertionError(f"deltaps {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    cluster = tmp_path / ".deltaps" / "cluster.json"
    if cluster.exists():  # the test failed half-way: stop what it started
        started = ClusterFile.load(cluster)
        run("down", cwd=tmp_path, check=False)
        # `down` cannot stop a cluster it cannot reach (a secured one without its key, a node
        # that never came up): end every process the cluster file names, by PID
        for pid in [started.supervisor_pid] + [n.pid for n in started.nodes]:
            if pid and alive(pid):
                os.kill(pid, 9)


def test_cluster_lifecycle_as_a_user_runs_it(workdir):
    spec = workdir / "spec.toml"
    spec.write_text(subprocess.run(
        [sys.executable, "-c", "from worker.sources import synthetic_spec_toml as s; "
                               "print(s(bits=18))"], capture_output=True, text=True, cwd=REPO,
        check=True).stdout)
    out = run("up", "--spec", str(spec), "--shards", "2", "--replicas", "2", cwd=workdir).stdout
    assert "cluster up: 2 shard(s), 2 replica(s), models ctr" in out
    cluster = ClusterFile.load(workdir / ".deltaps" / "cluster.json")
    pids = [cluster.supervisor_pid] + [n.pid for n in cluster.nodes]
    assert len(pids) == 5 and all(alive(p) for p in pids)

    out = run("train", "synthetic:20000:3", "--batch-size", "512", "--json", cwd=workdir).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["events"] == 20000 and summary["model"] == "ctr"
    assert summary["logloss"] < 0.53  # constant predictor on this stream: ~0.527
    assert summary["bayes_logloss"] < summary["logloss"]

    status = run("status", "--json", cwd=workdir).stdout
    rows = json.loads(status)
    assert [r["state"] for r in rows] == ["serving", "serving", "ready", "ready"]

    verify = run("verify", cwd=workdir)
    assert "all 4 replica/model/shard copies match" in verify.stdout

    pred = run("predict", '{"c1": 3, "i1": 2.0}', "{}", cwd=workdir).stdout
    answer = json.loads(pred)
    assert len(answer["predictions"]) == 2 and all(0 < p < 1 for p in answer["predictions"])
    piped = run("predict", input='{"c1": 3, "i1": 2.0}\n', cwd=workdir).stdout
    assert json.loads(piped)["predictions"][0] == answer["predictions"][0]

    bad = run("predict", '{"c1": {"x": 1}}', cwd=workdir, check=False)
    assert bad.returncode != 0 and "unsupported type dict" in bad.stderr

    snap = run("snapshot", cwd=workdir).stdout
    assert snap.count("snap-") == 2

    run("down", cwd=workdir)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)]
    assert run("status", cwd=workdir, check=False).returncode != 0


def test_supervisor_restarts_a_killed_node_and_status_shows_it(workdir):
    import signal
    run("up", "--shards", "2", "--replicas", "1", cwd=workdir)
    run("train", "synthetic:5000:1", "--batch-size", "500", "--max-delay", "2", cwd=workdir)
    refused = run("train", "synthetic:500:1", "--no-pipeline", "--max-delay", "1", cwd=workdir,
                  check=False)
    assert refused.returncode != 0 and "needs the pipelined loop" in refused.stderr
    cluster = ClusterFile.load(workdir / ".deltaps" / "cluster.json")
    victim = cluster.shards()[1].pid
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        rows = json.loads(run("status", "--json", cwd=workdir, check=False).stdout)
        shard1 = next(r for r in rows if r["role"] == "shard" and r["index"] == 1)
        if shard1["restarts"] == 1 and shard1["state"] == "serving" and shard1["pid"] != victim:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert "all 2 replica/model/shard copies match" in run("verify", cwd=workdir).stdout
    run("down", cwd=workdir)


def test_train_reports_malformed_lines_and_keeps_going(workdir, tmp_path):
    run("up", "--shards", "1", "--replicas", "1", cwd=workdir)
    events = tmp_path / "events.jsonl"
    events.write_text('{"label": 1, "features": {"a": "x"}}\nnot json\n'
                      '{"label": 0, "features": {"a": "y"}}\n{"label": 7, "features": {}}\n')
    proc = run("train", str(events), cwd=workdir)
    assert "trained default: 2 events" in proc.stdout
    assert "events.jsonl:2: skipped malformed line: invalid" in proc.stderr
    assert "events.jsonl:4: skipped malformed line: label must be 0 or 1" in proc.stderr
    assert "skipped 2 malformed line(s)" in proc.stderr
    run("down", cwd=workdir)


def thread_nices(pid: int) -> set[int]:
    """The nice value of every thread of `pid` (Linux keeps one per thread)."""
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU affinity of every thread of `pid`."""
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


def nices_while_training(workdir, *args, env=None, look=thread_nices):
    """Start `deltaps train` on an endless stream, `look` at its threads (their nice values)
    once it has reported progress (every thread it starts exists by then), stop it."""
    proc = subprocess.Popen(deltaps_cmd() + ["train", "synthetic:1000000000:1", *args],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    try:
        assert select.select([proc.stderr], [], [], 60)[0], "no progress from deltaps train"
        line = proc.stderr.readline()  # the first progress line, ~2 s in
        assert "events" in line, line + proc.stderr.read()
        nices = look(proc.pid)
        cluster = ClusterFile.load(workdir / ".deltaps" / "cluster.json")
        # niceness orders processes within one scheduling group only: the cluster must share it
        assert scheduling_group(proc.pid) == scheduling_group(cluster.shards()[0].pid)
        return nices
    finally:
        proc.kill()
        proc.wait(10)


def scheduling_group(pid: int) -> tuple[str, str | None]:
    """The CPU cgroup of `pid` and its kernel autogroup. The kernel only puts a task in an
    autogroup when its CPU cgroup is the root one; elsewhere (a container with the cpu
    controller), `/proc/<pid>/autogroup` is empty, and where autogroup is not built in it is
    missing: both give None."""
    with open(f"/proc/{pid}/cgroup") as f:
        cgroups = f.read().splitlines()
    cpu_cgroup = next((line for line in cgroups if re.match(r"\d+:([^:]*,)?cpu(,[^:]*)?:", line)),
                      next(line for line in cgroups if line.startswith("0::")))
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            fields = f.read().split()
    except OSError:
        return cpu_cgroup, None
    return cpu_cgroup, fields[0] if fields else None


def thread_slices(pid: int) -> set[float | None]:
    """The time slice of every thread of `pid`, in ms."""
    return {time_slice_ms(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_training_yields_the_cpu_and_replicas_ask_for_short_slices(workdir):
    run("up", "--shards", "1", "--replicas", "1", cwd=workdir)
    floor = os.getpriority(os.PRIO_PROCESS, 0)  # a worker only ever lowers its priority

    def worker_nices(nice: int) -> set[int]:
        """Every thread at the worker's nice value, the helper thread (`worker.helper`) that
        many levels nicer still."""
        nice = max(nice, floor)
        return {nice, min(19, nice + HELPER_NICE)}
    assert nices_while_training(workdir) == worker_nices(10)  # defaults.toml worker_nice
    assert nices_while_training(workdir, "--nice", "15") == worker_nices(15)
    assert nices_while_training(workdir, env={"DELTAPS_TRAIN_NICE": "12"}) == worker_nices(12)
    cluster = ClusterFile.load(workdir / ".deltaps" / "cluster.json")
    if time_slice_ms() is not None:  # the kernel has per-task slices (Linux 6.12+)
        replica = next(n for n in cluster.nodes if n.role == "replica")
        assert thread_slices(replica.pid) == {0.1}  # defaults.toml replica_slice_ms
        assert thread_slices(cluster.shards()[0].pid) == {time_slice_ms()}  # shards: default
    run("down", cwd=workdir)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs: one to reserve")
def test_serving_cpus_keeps_replicas_and_training_apart(workdir):
    allowed = frozenset(os.sched_getaffinity(0))
    reserved = max(allowed)
    spec = workdir / "spec.toml"
    spec.write_text(f'[cluster]\nserving_cpus = "{reserved + 1}"\n')
    refused = run("up", "--spec", str(spec), cwd=workdir, check=False)
    assert refused.returncode != 0 and f"names CPU(s) {reserved + 1}" in refused.stderr
    assert not (workdir / ".deltaps" / "cluster.json").exists()  # nothing was started

    spec.write_text(f'[cluster]\nserving_cpus = "{reserved}"\n')
    run("up", "--spec", str(spec), "--shards", "1", "--replicas", "1", cwd=workdir)
    cluster = ClusterFile.load(workdir / ".deltaps" / "cluster.json")
    assert thread_cpus(cluster.replicas()[0].pid) == {frozenset({reserved})}
    assert thread_cpus(cluster.shards()[0].pid) == {allowed - {reserved}}
    assert nices_while_training(workdir, look=thread_cpus) == {allowed - {reserved}}
    rows = json.loads(run("status", "--json", cwd=workdir).stdout)
    assert {(r["role"], r["cpus"]) for r in rows} == {
        ("replica", str(reserved)), ("shard", format_cpu_list(allowed - {reserved}))}
    run("train", "synthetic:3000:1", "--batch-size", "500", cwd=workdir)
    assert "all 1 replica/model/shard copies match" in run("verify", cwd=workdir).stdout
    run("down", cwd=workdir)


def run_in_terminal(*args, cwd, columns: int = 160) -> bytes:
    """Run `deltaps ARGS` with a pseudo-terminal as its stdout and stderr; all it wrote."""
    import pty
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing else
        os.chdir(cwd)
        cmd = deltaps_cmd() + list(args)
        os.execvpe(cmd[0], cmd, {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm",
                                 "COLUMNS": str(columns)})
    out, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            out += data
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    return out


def test_train_draws_a_bar_on_a_terminal_plain_lines_when_piped_and_a_plot(workdir):
    run("up", "--shards", "1", "--replicas", "1", cwd=workdir)
    run("synth", "30000", "--out", "events.tsv", cwd=workdir)
    piped = run("train", "events.tsv", "--batch-size", "512", "--plot", "curve.png",
                cwd=workdir)
    assert "trained default: 30,000 events" in piped.stdout
    assert "\x1b" not in piped.stdout + piped.stderr  # no escape codes in a pipe or a log
    png = (workdir / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # two panels drawn, not blank

    missing = run("train", "events.tsv", "--plot", "no/such/dir/c.png", cwd=workdir, check=False)
    assert missing.returncode != 0 and "no such directory" in missing.stderr

    shown = run_in_terminal("train", "events.tsv", "--batch-size", "512", cwd=workdir)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", shown).decode()
    assert b"\x1b[" in shown and "\u2501" in text  # drawn in place, with a bar
    last = text.replace("\r\n", "\n").split("\r")[-1]  # the bar's final frame and the summary
    assert re.search(r"train .* 100% 30,000 ev .* logloss 0\.\d{4} .*AUC 0\.\d{4}.* ETA 0:00",
                     last), last
    assert "trained default: 30,000 events" in last
    run("down", cwd=workdir)
