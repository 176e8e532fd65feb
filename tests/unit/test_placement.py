"""deploy.runtime.placement: replicas get the CPUs `serving_cpus` reserves and shards and
workers the rest; pinning reaches every thread."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from deploy.runtime.placement import cpus_for

REPO = Path(__file__).resolve().parents[2]


def test_replicas_get_the_reserved_cpus_and_training_the_rest():
    allowed = {0, 1, 2, 3}
    assert cpus_for("replica", "3", allowed) == {3}
    assert cpus_for("shard", "3", allowed) == {0, 1, 2}
    assert cpus_for("worker", "2-3", allowed) == {0, 1}
    for role in ("replica", "shard", "worker"):  # nothing reserved: no pinning at all
        assert cpus_for(role, "", allowed) is None


def test_a_reservation_this_machine_cannot_honour_is_refused():
    with pytest.raises(ConfigError, match=r"serving_cpus = '3-4' names CPU\(s\) 4, which this "
                                          r"process may not run on \(allowed: 0-3\)"):
        cpus_for("replica", "3-4", {0, 1, 2, 3})
    assert cpus_for("replica", "0-1", {0, 1}) == {0, 1}
    with pytest.raises(ConfigError, match="leaves no CPU for shards and workers"):
        cpus_for("shard", "0-1", {0, 1})


PIN = """
import os, threading
from deploy.runtime.placement import pin_to_cpus
started = threading.Event(); done = threading.Event()
threading.Thread(target=lambda: (started.set(), done.wait())).start()
started.wait()
got = pin_to_cpus({{{cpu}}})
tids = [int(t) for t in os.listdir('/proc/self/task')]
later = {{}}
t = threading.Thread(target=lambda: later.setdefault('cpus', os.sched_getaffinity(0)))
t.start(); t.join()
done.set()
print(sorted(got), len(tids), *(sorted(os.sched_getaffinity(t)) for t in tids), sorted(later['cpus']))
"""


def test_pinning_reaches_every_thread_and_threads_started_later():
    cpu = max(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", PIN.format(cpu=cpu)], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.split()
    got, n_threads, *per_thread = out
    assert got == f"[{cpu}]" and int(n_threads) >= 2
    assert per_thread == [f"[{cpu}]"] * (int(n_threads) + 1)  # + the thread started after
