"""The event loop's timers, without sockets: an idle timer is skipped until it has work."""
from __future__ import annotations

from common.transport.loop import EventLoop


def test_an_idle_timer_runs_only_once_it_has_work_and_then_at_once():
    loop = EventLoop()
    pending: list[int] = []
    published: list[int] = []  # how much work each run of the idle timer found
    passes = {"other": 0}

    def publish() -> None:
        published.append(len(pending))
        pending.clear()

    def other() -> None:  # gives the idle timer work twice, then stops the loop
        passes["other"] += 1
        if passes["other"] in (3, 6):
            pending.append(passes["other"])
        if passes["other"] == 9:
            loop.stop()

    loop.every(0.001, publish, idle=lambda: not pending)
    loop.every(0.005, other)
    loop.run()
    assert published == [1, 1]  # never ran while idle, ran once per time it had work
    assert not pending
