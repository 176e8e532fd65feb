"""deltaps across real network interfaces: every shard, replica, worker and client in its own
network namespace with its own address (tests/netlab.py), links cut and healed while the
cluster works. Needs root and iproute2/nftables (CI has them); skipped with the reason
otherwise."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests import netlab

REASON = netlab.unavailable()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)),
              pytest.mark.timeout(600)]
SPEC = "[models.ctr]\nbits = 16\n"


@pytest.fixture
def lab(tmp_path):
    """Factory: lab(hosts) -> a NetLab, closed (processes, namespaces) at teardown."""
    made = []

    def make(hosts):
        made.append(netlab.NetLab(hosts, tmp_path / f"lab{len(made)}").up())
        return made[-1]

    yield make
    for m in made:
        m.close()


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def crcs(verify_output: str) -> dict[str, str]:
    """shard -> checksum of its slice, from `deltaps verify` output."""
    return dict(re.findall(r"shard (\d+): OK \(seq \d+ crc (\w+)\)", verify_output))


def test_train_and_serve_across_namespaces(lab):
    net = lab(["shard0", "shard1", "rep0", "rep1", "worker", "admin"])
    # the worker below also finds the shards without the cluster file, by the spec's
    # shard_hosts: shard k is host k, {net}.1k
    spec = (f'[cluster]\nbase_port = {netlab.SHARD_PORT}\nshard_hosts = "{net.net}.1{{index}}"\n'
            + SPEC)
    net.cluster(spec, ["shard0", "shard1"], ["rep0", "rep1"])
    net.start_cluster("admin")

    trained = json.loads(ok(net.deltaps("worker", "train", "synthetic:30000:3", "--json",
                                        "--batch-size", "1024")))
    assert trained["events"] == 30000
    spec_file = net.dir / "spec.toml"
    spec_file.write_text(spec)
    by_spec = json.loads(ok(net.deltaps("worker", "train", "synthetic:10000:4", "--json",
                                        "--spec", str(spec_file), cluster=False)))
    assert by_spec["events"] == 10000

    status = json.loads(ok(net.deltaps("admin", "status", "--json")))
    assert {(r["role"], r["index"], r["address"], r["state"]) for r in status} == {
        ("shard", 0, f"tcp://{net.addr['shard0']}:5000", "serving"),
        ("shard", 1, f"tcp://{net.addr['shard1']}:5000", "serving"),
        ("replica", 0, f"tcp://{net.addr['rep0']}:6000", "ready"),
        ("replica", 1, f"tcp://{net.addr['rep1']}:6000", "ready")}
    assert all(r["pid"] == net.nodes[(r["role"], r["index"])].pid for r in status)
    table = ok(net.deltaps("admin", "status"))
    assert all(net.addr[h] in table for h in ("shard0", "shard1", "rep0", "rep1"))

    verified = ok(net.deltaps("admin", "verify"))
    assert "all 4 replica/model/shard copies match" in verified
    shard_seqs = [r["models"]["ctr"]["seq"] for r in status if r["role"] == "shard"]
    answer = json.loads(ok(net.deltaps("admin", "predict", '{"c1": "a"}', "{}")))
    assert len(answer["predictions"]) == 2 and answer["version"] == shard_seqs
    assert len(ok(net.deltaps("admin", "snapshot")).strip().splitlines()) == 2
    for rep in ("rep0", "rep1"):  # the REST API on each replica's own address
        url = f"http://{net.addr[rep]}:{netlab.HTTP_PORT}/v1/models/ctr:predict"
        code = ("import json, urllib.request; print(urllib.request.urlopen(urllib.request."
                f"Request({url!r}, data=b'{{\"instances\": [{{}}]}}'), timeout=5).read().decode())")
        assert json.loads(ok(net.run("admin", [sys.executable, "-c", code])))["predictions"]


EVENTS, BATCH, CUT_S = 800_000, 1024, 30.0


def reference_crcs(tmp_path) -> dict[str, str]:
    """The shards' checksums after the same training on an undisturbed loopback cluster: one
    worker learns exactly (deterministically), so a partition must not change one bit."""
    from deploy.local import LocalCluster
    c = LocalCluster(tmp_path / "reference", SPEC, shards=2, replicas=1).start_all()
    try:
        cmd = [sys.executable, "-m", "deploy.cli"]
        ok(subprocess.run(cmd + ["train", f"synthetic:{EVENTS}:3", "--batch-size", str(BATCH),
                                 "--cluster", str(c.path)], capture_output=True, text=True,
                          cwd=netlab.REPO, timeout=300))
        return crcs(ok(subprocess.run(cmd + ["verify", "--cluster", str(c.path)],
                                      capture_output=True, text=True, cwd=netlab.REPO,
                                      timeout=120)))
    finally:
        c.stop_all()


def test_shard_cut_off_for_30s_while_a_worker_trains(lab, tmp_path):
    net = lab(["shard0", "shard1", "rep0", "worker", "admin"])
    net.cluster(SPEC, ["shard0", "shard1"], ["rep0"])
    net.start_cluster("admin")
    watch = netlab.PushWatch(net, "admin")
    worker = net.python("worker", "-m", "deploy.cli", "train", f"synthetic:{EVENTS}:3", "--json",
                        "--batch-size", str(BATCH), "--cluster", str(net.cluster_file),
                        log=net.dir / "worker.log")
    rss = netlab.RssSampler(worker.pid)
    deadline = time.monotonic() + 120
    while watch.pushes()[0] < 100:
        assert worker.poll() is None and time.monotonic() < deadline, (net.dir / "worker.log").read_text()
        time.sleep(0.05)

    net.partition("shard0", "drop")
    cut_at, at_cut = time.monotonic(), watch.pushes()
    # memory is measured from when the worker is blocked: until then it finishes the batches
    # it had in flight, whose arrays come and go as in any batch
    assert watch.stalled(quiet_s=1.0, timeout=CUT_S / 2), "the worker went on pushing"
    cut_mb = rss.mark()
    time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
    assert watch.pushes()[0] == at_cut[0], "shard 0 applied pushes while cut off"
    assert worker.poll() is None, "the worker gave up while the shard was cut off"
    blocked_mb = rss.peak_since_mark_mb  # the peak while blocked, not one from before
    healed_at = time.time()
    net.heal("shard0")
    resumed_s = watch.first_change_after(healed_at, timeout=60)
    assert worker.wait(300) == 0, (net.dir / "worker.log").read_text()
    summary = json.loads((net.dir / "worker.log").read_text().strip().splitlines()[-1])
    print(f"\npartition {CUT_S:.0f}s: resumed {resumed_s:.3f}s after the heal; worker RSS "
          f"{cut_mb:.0f} MB once blocked, peak {blocked_mb:.0f} MB while blocked, peak "
          f"{rss.peak_mb:.0f} MB overall")
    assert resumed_s is not None and resumed_s <= 2.0, f"resumed {resumed_s}s after the heal"
    assert blocked_mb - cut_mb < 32, f"worker memory grew {blocked_mb - cut_mb:.0f} MB while blocked"

    assert summary["events"] == EVENTS
    status = json.loads(ok(net.deltaps("admin", "status", "--json")))
    pushes = [r["models"]["ctr"]["pushes"] for r in status if r["role"] == "shard"]
    assert pushes == [summary["batches"]] * 2, "a push was lost or applied twice"
    verified = ok(net.deltaps("admin", "verify"))
    assert crcs(verified) == reference_crcs(tmp_path)


def test_replica_cut_off_repeatedly_while_a_client_reads(lab):
    net = lab(["shard0", "shard1", "rep0", "rep1", "rep2", "worker", "client", "admin"])
    net.cluster(SPEC, ["shard0", "shard1"], ["rep0", "rep1", "rep2"])
    net.start_cluster("admin")
    worker = net.python("worker", "-m", "deploy.cli", "train", "synthetic:20000000:5",
                        "--batch-size", "1024", "--cluster", str(net.cluster_file),
                        log=net.dir / "worker.log")
    # cuts outlast the transport's heartbeat timeout, so the replica's connections drop and
    # the updates published meanwhile are lost to it: it must notice and re-fetch snapshots
    cuts, cut_s, between_s = 4, 6.0, 3.0
    reader = net.python("client", "-m", "tests.netlab_probes", "read", str(net.cluster_file),
                        "--seconds", str(cuts * (cut_s + between_s) + 2))
    resync, gaps = [], []
    watch = netlab.PushWatch(net, "admin")
    deadline = time.monotonic() + 120
    while watch.pushes()[0] < 20:  # the worker is training
        assert worker.poll() is None and time.monotonic() < deadline, (net.dir / "worker.log").read_text()
        time.sleep(0.05)
    for i in range(cuts):
        net.partition("rep1", "drop" if i % 2 else "link")
        time.sleep(cut_s)
        net.heal("rep1")
        caught = json.loads(ok(net.run("admin", [sys.executable, "-m", "tests.netlab_probes",
                                                 "caughtup", str(net.cluster_file),
                                                 "--replica", "1", "--timeout", "30"])))
        resync.append(caught["seconds"])
        gaps.append(caught["gaps"])
        time.sleep(max(0.0, between_s - caught["seconds"]))
    out, err = reader.communicate(timeout=120)
    reads = json.loads(out.decode().strip().splitlines()[-1])
    assert worker.poll() is None, "the worker stopped while replicas were cut off"
    worker.terminate()
    worker.wait(30)
    total = reads["ok"] + reads["failed"]
    print(f"\nreads {reads['ok']}/{total} ok ({reads['ok'] / total:.4%}), slowest "
          f"{reads['slowest_s']}s, errors {reads['errors']}; replica-1 caught up "
          f"{', '.join(f'{s:.2f}' for s in resync)} s after each heal (gaps seen {gaps})")
    assert total > 100 and reads["ok"] / total >= 0.999, reads
    assert all(0 <= s <= 30 for s in resync), f"replica-1 did not resync: {resync}"
    assert gaps[-1] > 0, f"replica-1 never missed an update, so never had to resync: {gaps}"
    assert "all 6 replica/model/shard copies match" in ok(net.deltaps("admin", "verify"))
