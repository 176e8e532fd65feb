"""deploy.runtime.priority: a worker lowers every thread's CPU priority, never raises it; a replica
asks for a short time slice on every thread, keeping its niceness."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.runtime.priority import request_time_slice, time_slice_ms

REPO = Path(__file__).resolve().parents[2]
WITH_A_SECOND_THREAD = """
import os, threading
from deploy.runtime.priority import lower_cpu_priority, request_time_slice, time_slice_ms
started = threading.Event(); done = threading.Event()
threading.Thread(target=lambda: (started.set(), done.wait())).start()
started.wait()
tids = [int(t) for t in os.listdir('/proc/self/task')]
{body}
done.set()
"""
LOWER = """got = lower_cpu_priority({nice})
print(got, *(os.getpriority(os.PRIO_PROCESS, t) for t in tids))"""
SLICE = """got = request_time_slice({slice_ms})
print(got, *(time_slice_ms(t) for t in tids), *(os.getpriority(os.PRIO_PROCESS, t) for t in tids))
r = {{}}
t = threading.Thread(target=lambda: r.setdefault('later', time_slice_ms())); t.start(); t.join()
print(r['later'])"""
SLICES = time_slice_ms() is not None  # the kernel has per-task slices (Linux 6.12+)


def in_child(body: str, start_nice: int = 0) -> list[str]:
    """Run `body` in a fresh process started at niceness `start_nice` with a second thread
    running; its output lines."""
    out = subprocess.run([sys.executable, "-c", WITH_A_SECOND_THREAD.format(body=body)],
                         cwd=REPO, check=True, capture_output=True, text=True,
                         preexec_fn=lambda: os.nice(start_nice))
    return out.stdout.splitlines()


def lowered_in_child(start: int, nice: int) -> tuple[int, list[int]]:
    """(what lower_cpu_priority(nice) returned, every thread's nice value after)."""
    got, *threads = (int(x) for x in in_child(LOWER.format(nice=nice), start)[0].split())
    return got, threads


def test_every_thread_is_lowered_to_the_requested_niceness():
    want = max(10, os.getpriority(os.PRIO_PROCESS, 0))  # children start at our niceness
    got, threads = lowered_in_child(0, want)
    assert got == want and threads == [want, want]


def test_a_process_already_nicer_is_left_as_it_is():
    started_at = min(os.getpriority(os.PRIO_PROCESS, 0) + 15, 19)
    got, threads = lowered_in_child(15, 5)
    assert got == started_at and threads == [started_at, started_at]


@pytest.mark.skipif(not SLICES, reason="the kernel has no per-task time slices")
def test_every_thread_gets_the_requested_slice_and_keeps_its_niceness():
    nice = min(os.getpriority(os.PRIO_PROCESS, 0) + 3, 19)
    first, later = in_child(SLICE.format(slice_ms=0.25), nice)
    got, slice_a, slice_b, nice_a, nice_b = (float(x) for x in first.split())
    assert got == slice_a == slice_b == 0.25
    assert nice_a == nice_b == nice
    assert float(later) == 0.25  # threads started afterwards inherit it


@pytest.mark.skipif(not SLICES, reason="the kernel has no per-task time slices")
def test_a_zero_slice_gives_the_kernel_default_back():
    default = time_slice_ms()
    first, _ = in_child("request_time_slice(0.1)\n" + SLICE.format(slice_ms=0))
    got, slice_a, slice_b = (float(x) for x in first.split()[:3])
    assert got == slice_a == slice_b == default != 0.1


def test_a_slice_outside_the_kernel_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        request_time_slice(0.01)
    with pytest.raises(ValueError, match="outside"):
        request_time_slice(500)
