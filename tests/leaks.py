"""What a test left behind: threads, open file descriptors and child processes.

In-process clusters run every node in the test process, so a node that does not close a
socket, join a helper thread or reap a child leaves it in the process for every later test,
where it shows up as a hang, an fd limit or a port in use far from its cause. The fixture
(`inprocess_cluster` in tests/conftest.py) takes a `snapshot()` before the test and fails the
test with `leaks()` after it, naming what was left.

File descriptors: the ZeroMQ context opens 4 of its own the first time any socket is made (the
reaper's and one I/O thread's mailbox eventfd and epoll, measured on Linux with pyzmq 27) and
keeps them for the life of the process. `snapshot()` makes and closes one socket first, so
those exist before the count is taken, and the tolerance is then 0: a leaked zmq socket is a
single eventfd, and any tolerance would hide it. What closes asynchronously (zmq's I/O thread
closes a socket's fds after `close()` returns) is waited for: before the count is taken until
the fds stop changing, after the test for up to `settle_s`.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import psutil
import zmq

from common.transport import context

FD_TOLERANCE = 0
SETTLE_S = 3.0


@dataclass(frozen=True)
class Resources:
    """The process's open fds (fd -> what it points at), live threads and child processes."""

    fds: dict[int, str]
    threads: frozenset[threading.Thread]
    children: frozenset[int]


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used, closed by now
            pass
    return fds


def children() -> frozenset[int]:
    return frozenset(p.pid for p in psutil.Process().children(recursive=True))


_warm = False


def warm_up_zmq() -> None:
    """Make the ZeroMQ context open its own lasting fds now, not during the test (once: the
    socket made for it is closed by zmq's reaper thread a moment later, see `settled_fds`)."""
    global _warm
    if not _warm:
        context().socket(zmq.PAIR).close(linger=0)
        _warm = True


def settled_fds(quiet_s: float = 0.05, limit_s: float = 1.0) -> dict[int, str]:
    """The open fds once they have stopped changing for `quiet_s`: a socket closed just before
    (by zmq's reaper, or by the previous test) must not be counted as the test's baseline,
    where it would hide a leak of the same size."""
    deadline = time.monotonic() + limit_s
    fds = open_fds()
    while True:
        time.sleep(quiet_s)
        now = open_fds()
        if now == fds or time.monotonic() >= deadline:
            return now
        fds = now


def snapshot() -> Resources:
    warm_up_zmq()
    return Resources(settled_fds(), frozenset(threading.enumerate()), children())


def describe_child(pid: int) -> str:
    try:
        return f"pid {pid} ({' '.join(psutil.Process(pid).cmdline()) or '?'})"
    except psutil.Error:
        return f"pid {pid}"


def compare(before: Resources, after: Resources, fd_tolerance: int = FD_TOLERANCE) -> list[str]:
    """What is in `after` and not in `before`, one line per kind of leak."""
    problems = []
    grown = len(after.fds) - len(before.fds)
    if grown > fd_tolerance:
        new = sorted(set(after.fds) - set(before.fds))
        problems.append(f"{grown} file descriptor(s) leaked (tolerance {fd_tolerance}): "
                        + ", ".join(f"fd {fd} -> {after.fds[fd]}" for fd in new))
    threads = sorted(t.name for t in after.threads - before.threads if t.is_alive())
    if threads:
        problems.append(f"{len(threads)} thread(s) leaked: {', '.join(threads)}")
    kids = sorted(after.children - before.children)
    if kids:
        problems.append(f"{len(kids)} child process(es) leaked: "
                        + ", ".join(describe_child(pid) for pid in kids))
    return problems


def leaks(before: Resources, settle_s: float | None = None,
          fd_tolerance: int = FD_TOLERANCE) -> list[str]:
    """`compare(before, now)`, retried for up to `settle_s` (default `SETTLE_S`) while anything
    is still left."""
    settle_s = SETTLE_S if settle_s is None else settle_s
    deadline = time.monotonic() + settle_s
    while True:
        after = Resources(open_fds(), frozenset(threading.enumerate()), children())
        problems = compare(before, after, fd_tolerance)
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(0.05)
