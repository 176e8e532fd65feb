"""common.placement: CPU lists parse and print in the kernel's format; replicas get the CPUs
`serving_cpus` reserves and shards and workers the rest; pinning reaches every thread."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.placement import cpus_for, format_cpu_list, parse_cpu_list

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, cpus", [
    ("", set()), ("  ", set()), ("1", {1}), ("2-3", {2, 3}), ("0,4-6", {0, 4, 5, 6}),
    (" 1 , 3-4 ", {1, 3, 4}), ("3,3", {3}),
])
def test_cpu_lists_parse_like_the_kernel_writes_them(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text, err", [
    ("a", "'a' is not a CPU number"), ("1,,2", "'' is not a CPU number"),
    ("3-1", "'3-1' is not a CPU number or an increasing range"), ("-1", "'-1'"),
    ("1-", "'1-'"), ("1.5", "'1.5'"),
])
def test_bad_cpu_lists_name_the_wrong_part(text, err):
    with pytest.raises(ValueError, match=err):
        parse_cpu_list(text)


@pytest.mark.parametrize("cpus, text", [
    (set(), ""), ({0}, "0"), ({0, 1, 2, 5}, "0-2,5"), ({7, 3, 4}, "3-4,7"),
])
def test_cpu_lists_print_in_the_kernel_format(cpus, text):
    assert format_cpu_list(cpus) == text
    assert parse_cpu_list(text) == cpus


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
from common.placement import pin_to_cpus
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
