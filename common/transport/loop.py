"""`EventLoop`: a node's one thread, waiting on its endpoints and timers in turn.

Single-threaded on purpose: a node's state is only ever touched from its loop, so it needs no
locks, and what one handler sees is never half of another's change.
"""
from __future__ import annotations

import select
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol


class Watchable(Protocol):
    """What the loop needs of a transport object (`Endpoint` provides both)."""

    def waiting(self) -> bool: ...

    def fileno(self) -> int: ...


@dataclass(slots=True)
class Timer:
    """A callback run every `interval` seconds; `due` is when it runs next (monotonic).

    `idle()`, when given, says the callback has nothing to do: the loop then neither runs it
    nor wakes up for it, and once it has work again it runs at the first pass of the loop
    after its due time (a node's handlers are what give it work, and they run on the loop)."""

    due: float
    interval: float
    callback: Callable[[], None]
    idle: Callable[[], bool] | None = None


class EventLoop:
    """Wait on endpoints and timers, stop on SIGTERM/SIGINT or `stop()`.

    Waits with `select` on the endpoints' ZMQ_FD descriptors, so a timer fires on time to the
    microsecond without spinning (zmq's own poll counts in whole milliseconds). ZMQ_FD is
    edge-triggered: every endpoint's `waiting()` is checked after each wake-up, and the loop
    only sleeps once none has a message waiting. It never sleeps longer than 0.1 s, so a
    `stop()` from another thread takes effect within that.
    """

    def __init__(self):
        self.watched: list[tuple[Watchable, Callable[[], None]]] = []
        self.timers: list[Timer] = []
        self.running = False
        self._stop_asked = False

    def watch(self, endpoint: Watchable, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever a message is waiting on `endpoint`."""
        self.watched.append((endpoint, callback))

    def every(self, seconds: float, callback: Callable[[], None],
              idle: Callable[[], bool] | None = None) -> None:
        """Run `callback()` every `seconds`; skipped (no wake-up) while `idle()` is true."""
        self.timers.append(Timer(time.monotonic() + seconds, seconds, callback, idle))

    def stop(self, *_args) -> None:
        """Make `run()` return; if it has not started yet (a node starting in a thread), it
        returns at once when it does."""
        self._stop_asked = True
        self.running = False

    def install_signal_handlers(self) -> bool:
        """Stop on SIGTERM/SIGINT. Python lets only the main thread install signal handlers:
        in any other thread (a node run in a thread of a test cluster) this does nothing and
        returns False; stop that loop with `stop()`."""
        if threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        return True

    def run(self) -> None:
        self.running = not self._stop_asked
        self._stop_asked = False
        watched = list(self.watched)
        fds = [endpoint.fileno() for endpoint, _ in watched]
        while self.running:
            busy = False
            for endpoint, callback in watched:
                if endpoint.waiting():
                    callback()
                    busy = True
            now = time.monotonic()
            wake = now + 0.1
            for timer in self.timers:
                if timer.idle is not None and timer.idle():
                    continue
                if timer.due <= now:
                    timer.due = now + timer.interval
                    timer.callback()
                wake = min(wake, timer.due)
            if busy or not self.running:
                continue  # more may be waiting: ZMQ_FD will not signal it again
            wait = wake - time.monotonic()
            if wait > 0:
                select.select(fds, [], [], wait)
