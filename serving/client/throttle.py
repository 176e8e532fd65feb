"""Client-side adaptive throttling: shed reads locally while the serving group is failing.

Retries and eager callers can push a struggling group over; a client that sees most of its
recent attempts fail rejects a share of new reads itself (the SRE book's client-side
throttling, chapter "Handling Overload"), so only a few reads reach the replicas as probes until
they recover.
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import Callable

from common.errors import DeltapsError


class Throttled(DeltapsError):
    """Rejected locally by adaptive throttling: too many recent reads failed."""

    code = "throttled"


class AdaptiveThrottle:
    """Client-side throttling driven by the recent success rate (SRE book, ch. 21).

    Over a sliding window (`window_s`, in `buckets` steps) it counts *requests* (attempts sent
    to a replica, plus reads rejected locally) and *accepts* (attempts a replica answered:
    predictions and client mistakes; not timeouts, not_ready or lost connections). `allow()`
    rejects a new read with probability ``max(0, (requests - K*accepts) / (requests + 1))``.
    With K = 2 nothing is shed until more than half the attempts in the window fail; under
    sustained failure the probability tends to 1, and the few reads still let through act as
    probes. Once the group is healthy again, the share of reads let through doubles with
    every window at a constant offered load (locally rejected reads count as requests, as in
    the book), so shedding fades out over a few windows. An attempt is counted when its
    outcome is known, so a burst of reads in flight never throttles itself.
    """

    def __init__(self, k: float = 2.0, window_s: float = 10.0, buckets: int = 10,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None):
        self.k = k
        self.bucket_s = window_s / buckets
        self.n_buckets = buckets
        self.clock = clock
        self.rng = rng or random.Random()
        self.window: deque[list] = deque()  # [bucket index, requests, accepts]
        self.rejected = 0

    def _bucket(self) -> list:
        now = int(self.clock() // self.bucket_s)
        while self.window and self.window[0][0] <= now - self.n_buckets:
            self.window.popleft()
        if not self.window or self.window[-1][0] != now:
            self.window.append([now, 0, 0])
        return self.window[-1]

    def counts(self) -> tuple[int, int]:
        """(requests, accepts) over the window."""
        self._bucket()
        return sum(b[1] for b in self.window), sum(b[2] for b in self.window)

    def probability(self) -> float:
        requests, accepts = self.counts()
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def allow(self) -> bool:
        """False (reject the read locally, counting it as a request) with the current
        probability of rejection."""
        p = self.probability()
        if p > 0 and self.rng.random() < p:
            self._bucket()[1] += 1
            self.rejected += 1
            return False
        return True

    def record(self, accepted: bool) -> None:
        """The outcome of one attempt sent to a replica."""
        bucket = self._bucket()
        bucket[1] += 1
        bucket[2] += int(accepted)
