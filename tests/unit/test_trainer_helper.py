import os
import sys
import threading
import time

import pytest

from worker.helper import HELPER_NICE, Helper


def test_helper_runs_calls_in_order_hands_back_errors_and_ends_on_close():
    helper = Helper()
    helper.submit(lambda: 1 + 1)
    assert helper.result() == 2
    helper.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        helper.result()
    helper.submit(lambda: "still alive")
    assert helper.result() == "still alive"
    helper.close()
    deadline = time.monotonic() + 5
    while any(t.name == "featurize" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "helper thread did not end"
        time.sleep(0.01)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_helper_runs_nicer_than_the_thread_that_made_it_and_leaves_that_one_alone():
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    helper = Helper()
    helper.submit(lambda: os.getpriority(os.PRIO_PROCESS, 0))
    assert helper.result() == min(19, mine + HELPER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine
    helper.close()


def test_close_waits_for_the_call_in_progress():
    """A run that ends leaves no read of its own going on (a stream read finishing later would
    take entries from under whoever reads the source next)."""
    finished, started, queued_ran = threading.Event(), threading.Event(), threading.Event()

    def slow_read():
        started.set()
        time.sleep(0.3)
        finished.set()

    helper = Helper()
    helper.submit(slow_read)
    helper.submit(queued_ran.set)  # queued behind the running call: dropped
    assert started.wait(5)
    helper.close()
    assert finished.is_set()
    time.sleep(0.05)
    assert not queued_ran.is_set()
