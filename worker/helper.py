"""The trainer's helper thread: reads, featurizes and indexes the next batches while the
learning thread learns and pushes the one before (`worker.trainer`).

Why it runs nicer than the learning thread: the learning thread is the one every batch waits
for (pull, learn, push, in order), while the helper works up to `READ_AHEAD` batches ahead and
can fall behind for a while at no cost. On a machine whose cores are all busy (shards and
replicas beside the worker), an equal share would have the scheduler preempt the learning
thread for the helper half the time; a few nice levels lower, the helper takes what the
learning thread leaves. Linux keeps a nice value per thread, so the helper lowers its own; on
other systems the value is the process's, and the helper leaves it alone.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Callable

HELPER_NICE = 5  # nice levels below the learning thread's
# how long `close` waits for a call in progress: a read of an acknowledged stream (which takes
# entries from its consumer group) returns within its block time; a quiet stdin may never
CLOSE_WAIT_S = 2.0


def _run_nicer(levels: int) -> None:
    """Lower the calling thread's CPU priority by `levels` (Linux: per thread), if allowed."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + levels))
    except OSError:  # a sandbox that forbids it: the helper runs as it is
        pass


class Helper:
    """One daemon thread running one call at a time (the next batch's reading, featurizing and
    indexing), `HELPER_NICE` levels nicer than the thread that made it. A daemon, so a worker
    stopped while its source blocks (a quiet stdin) still exits; an exception in the call is
    raised again by `result`."""

    def __init__(self):
        self._calls: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="featurize", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _run_nicer(HELPER_NICE)
        while (fn := self._calls.get()) is not None:
            try:
                self._results.put((fn(), None))
            except BaseException as exc:  # handed to the caller
                self._results.put((None, exc))

    def submit(self, fn: Callable[[], object]) -> None:
        self._calls.put(fn)

    def close(self) -> None:
        """The thread ends once its current call, if any, returns; calls not yet started are
        dropped (reads queued ahead of a run that ended). Waits up to `CLOSE_WAIT_S` for that
        call, so that a run which ended (an error included) leaves no read of its own going on
        when whatever comes next reads the same source, as a stopped process leaves none: a
        stream read that ended after a restarted consumer had taken back its pending entries
        would leave the entries it took pending for ever. A call that blocks longer (a quiet
        stdin) is left to the daemon thread."""
        try:
            while True:
                self._calls.get_nowait()
        except queue.Empty:
            pass
        self._calls.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(CLOSE_WAIT_S)

    def result(self, timeout: float | None = None):
        """The call's value (raises queue.Empty if it takes longer than `timeout`)."""
        value, exc = self._results.get(timeout=timeout)
        if exc is not None:
            raise exc
        return value
