"""Load spreading over serving replicas: which replica gets the next read.

Power of two choices on requests in flight: of two replicas drawn at random, the one with fewer
requests outstanding. It spreads load far better than one random draw, and the counts it needs
are the client's own, so no replica is asked for its load. A replica that just failed is set
aside for a growing back-off, so reads do not keep landing on it while it is in trouble.
"""
from __future__ import annotations

import random
import time
from typing import Callable, Sequence


class Balancer:
    """Power of two choices on outstanding requests; replicas that failed are avoided for a
    back-off (0.25 s doubling to 5 s) and used only when no other replica is left."""

    def __init__(self, n: int, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 backoff_s: float = 0.25, max_backoff_s: float = 5.0):
        self.rng = rng or random.Random()
        self.clock = clock
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.outstanding = [0] * n
        self.failures = [0] * n
        self.avoid_until = [0.0] * n
        self.picked = [0] * n

    def pick(self, candidates: Sequence[int]) -> int:
        now = self.clock()
        healthy = [k for k in candidates if self.avoid_until[k] <= now]
        if not healthy:
            k = min(candidates, key=lambda k: self.avoid_until[k])
        elif len(healthy) == 1:
            k = healthy[0]
        else:
            a, b = self.rng.sample(healthy, 2)
            k = a if self.outstanding[a] <= self.outstanding[b] else b
        self.picked[k] += 1
        return k

    def begin(self, k: int) -> None:
        self.outstanding[k] += 1

    def end(self, k: int, ok: bool) -> None:
        self.outstanding[k] -= 1
        self.mark(k, ok)

    def mark(self, k: int, ok: bool) -> None:
        if ok:
            self.failures[k] = 0
            self.avoid_until[k] = 0.0
        else:
            self.failures[k] += 1
            backoff = min(self.max_backoff_s, self.backoff_s * 2 ** (self.failures[k] - 1))
            self.avoid_until[k] = self.clock() + backoff
