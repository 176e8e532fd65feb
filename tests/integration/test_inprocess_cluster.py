"""The in-process test cluster and its fixture: real nodes in threads serve, stop and report
failures; the fixture's leak checks and timeout fire when they must (a check that cannot
fail proves nothing), and stay quiet on a clean test."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from deploy.admin import node_status
from deploy.inprocess import InProcessCluster
from tests import leaks
from tests.conftest import INPROCESS_TIMEOUT_S, REPO
from tests.integration.helpers import (SMALL_SPEC, ListSource, planted_events, shard_weights,
                                       wait_replica_caught_up)
from worker.ps_client import PSClient
from worker.trainer import Trainer


def test_nodes_in_threads_train_serve_and_stop_cleanly(inprocess_cluster, request):
    c = inprocess_cluster(SMALL_SPEC, shards=2, replicas=1).start_all()
    names = {t.name for t in threading.enumerate()}
    assert {"shard-0", "shard-1", "replica-0"} <= names
    st = node_status(c.address("replica", 0), 2.0)
    assert st["pid"] == os.getpid() and st["http_address"] == c.cluster.replicas()[0].http_address
    ps = PSClient(c.cluster.shards())
    try:
        trainer = Trainer(ps, c.spec, "ctr", batch_size=128)
        trainer.train(ListSource(planted_events(500)))
        wait_replica_caught_up(c.address("replica", 0), "ctr", trainer.last_seqs)
        assert np.any(shard_weights(ps, "ctr", 16) != 0)
    finally:
        ps.close()
    assert "serving on" in c.log("shard", 0)
    assert c.stop_all() == {("replica", 0): 0, ("shard", 0): 0, ("shard", 1): 0}
    assert c.running() == []
    # the fixture put this test under the default timeout
    assert request.node.get_closest_marker("timeout").args == (INPROCESS_TIMEOUT_S,)


def test_a_node_stopped_while_it_is_still_being_built_ends_cleanly(inprocess_cluster):
    c = inprocess_cluster(SMALL_SPEC, shards=1, replicas=0)
    node = c.start("shard", 0)
    assert c.stop("shard", 0) == 0 and not node.alive()


def test_a_node_that_cannot_start_is_reported_with_its_traceback(tmp_path):
    c = InProcessCluster(tmp_path, SMALL_SPEC, shards=1, replicas=0)
    host, port = c.address("shard", 0).removeprefix("tcp://").split(":")
    taken = socket.socket()
    taken.bind((host, int(port)))
    taken.listen()
    try:
        c.start("shard", 0)
        with pytest.raises(RuntimeError, match="shard-0 ended") as failed:
            c.wait_ready(10)
        assert "Traceback" in str(failed.value)
        assert c.stop_all() == {("shard", 0): 1}
    finally:
        taken.close()


# --- the leak checks themselves -----------------------------------------------------------


def test_the_check_names_a_leaked_thread():
    before = leaks.snapshot()
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="forgotten-helper", daemon=True)
    thread.start()
    try:
        assert leaks.leaks(before, settle_s=0.1) == ["1 thread(s) leaked: forgotten-helper"]
    finally:
        release.set()
        thread.join()
    assert leaks.leaks(before, settle_s=1.0) == []


def test_the_check_names_a_leaked_file_descriptor():
    before = leaks.snapshot()
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        [problem] = leaks.leaks(before, settle_s=0.1)
        assert problem.startswith("1 file descriptor(s) leaked (tolerance 0): ")
        assert f"fd {fd} -> /dev/null" in problem
    finally:
        os.close(fd)
    assert leaks.leaks(before, settle_s=1.0) == []


def test_the_check_names_a_leaked_child_process():
    before = leaks.snapshot()
    child = subprocess.Popen(["sleep", "30"])
    try:
        [problem] = leaks.leaks(before, settle_s=0.1)
        assert problem == f"1 child process(es) leaked: pid {child.pid} (sleep 30)"
    finally:
        child.kill()
        child.wait()
    assert leaks.leaks(before, settle_s=1.0) == []


def test_a_leaked_zmq_socket_is_one_fd_and_is_caught():
    from common.transport import Channel
    before = leaks.snapshot()
    ch = Channel("tcp://127.0.0.1:1")
    try:
        [problem] = leaks.leaks(before, settle_s=0.1)
        assert "file descriptor(s) leaked" in problem and "eventfd" in problem
    finally:
        ch.close()
    assert leaks.leaks(before, settle_s=1.0) == []


INNER_TESTS = '''
import os
import threading
import time

import pytest

import deploy.inprocess
from tests.integration.helpers import SMALL_SPEC

KEPT = []


def test_clean(inprocess_cluster):
    inprocess_cluster(SMALL_SPEC, shards=1, replicas=1).start_all()


def test_leaves_a_thread(inprocess_cluster):
    inprocess_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    release = threading.Event()
    KEPT.append(release)
    threading.Thread(target=release.wait, name="left-running", daemon=True).start()


def test_leaves_a_file_open(inprocess_cluster):
    KEPT.append(open(os.devnull))


def test_a_node_that_will_not_stop(monkeypatch, inprocess_cluster):  # patch undone last
    monkeypatch.setattr(deploy.inprocess, "STOP_TIMEOUT_S", 0.5)
    c = inprocess_cluster(SMALL_SPEC, shards=1, replicas=0).start_all()
    c.nodes[("shard", 0)].node.stop = lambda: None


@pytest.mark.timeout(1, method="signal")
def test_runs_too_long(inprocess_cluster):
    inprocess_cluster(SMALL_SPEC, shards=1, replicas=1).start_all()
    time.sleep(30)
'''


def test_the_fixture_fails_tests_that_leak_hang_or_overrun(pytester):
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
                          "from tests.conftest import *\n"
                          "import tests.leaks\ntests.leaks.SETTLE_S = 0.5\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("errors"), outcomes.get("failed")) == (
        4, 3, 1), out
    assert "PASSED test_inner.py::test_clean" in out
    assert "ERROR test_inner.py::test_leaves_a_thread" in out
    assert "1 thread(s) leaked: left-running" in out
    assert "ERROR test_inner.py::test_leaves_a_file_open" in out
    assert "-> /dev/null" in out
    assert "ERROR test_inner.py::test_a_node_that_will_not_stop" in out
    assert "node thread(s) still running after stop: c0/shard-0" in out
    assert "FAILED test_inner.py::test_runs_too_long" in out and "Timeout" in out
    assert time.monotonic() - t0 < 25, "the 30 s test was not cut short"
