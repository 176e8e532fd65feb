import threading
import time

import pytest

from worker.trainer import _Helper


def test_helper_runs_calls_in_order_hands_back_errors_and_ends_on_close():
    helper = _Helper()
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
