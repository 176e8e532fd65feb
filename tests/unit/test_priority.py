"""worker.priority: a worker lowers every thread's CPU priority, never raises it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import os, threading
from worker.priority import lower_cpu_priority
started = threading.Event(); done = threading.Event()
threading.Thread(target=lambda: (started.set(), done.wait())).start()
started.wait()
got = lower_cpu_priority({nice})
print(got, *(os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')))
done.set()
"""


def lowered_in_child(start: int, nice: int) -> tuple[int, list[int]]:
    """In a fresh process started at niceness `start` with a second thread running, ask for
    `nice`: (what lower_cpu_priority returned, every thread's nice value after)."""
    out = subprocess.run([sys.executable, "-c", CHILD.format(nice=nice)], cwd=REPO, check=True,
                         capture_output=True, text=True, preexec_fn=lambda: os.nice(start))
    got, *threads = (int(x) for x in out.stdout.split())
    return got, threads


def test_every_thread_is_lowered_to_the_requested_niceness():
    want = max(10, os.getpriority(os.PRIO_PROCESS, 0))  # children start at our niceness
    got, threads = lowered_in_child(0, want)
    assert got == want and threads == [want, want]


def test_a_process_already_nicer_is_left_as_it_is():
    started_at = min(os.getpriority(os.PRIO_PROCESS, 0) + 15, 19)
    got, threads = lowered_in_child(15, 5)
    assert got == started_at and threads == [started_at, started_at]
