"""Python clients for serving replicas: batch predictions, failover, load spreading, throttling.

- **Load spreading**: power of two choices on outstanding requests (`Balancer`): two replicas
  are drawn at random and the one with fewer requests in flight gets the request. A replica
  that just failed is avoided for a short, growing back-off.
- **Failover**: a read that times out, finds the replica not ready, finds it unreachable (no
  connection: the sockets queue requests only on live connections) or loses its connection
  while waiting (the socket is monitored, so a killed replica is noticed at once) is retried
  on another replica, each replica at most once per read. Client mistakes (unknown model,
  invalid instance) are raised at once: another replica would refuse them too.
- **Adaptive throttling** (`AdaptiveThrottle`, Google SRE book, "Handling Overload"): over a
  sliding window the client counts requests and accepts (replies that were not failures), and
  rejects a new read locally with probability ``max(0, (requests - K*accepts) / (requests+1))``
  by raising `Throttled`, so a struggling serving group is not pushed over by retries.
- Every answer carries the model version (sequence number per shard) and its staleness.

`ServingClient` is synchronous (one thread at a time); `AsyncServingClient` is its asyncio
twin, for many reads in flight at once.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from common import messages as m
from common.config import ClusterFile
from common.errors import DeltapsError, InternalError, NotReady, RemoteError, Timeout
from common.features import Features
from common.transport import AsyncChannel, Channel, Unreachable, writable
from serving.model import check_features

RETRYABLE = (NotReady, Timeout, InternalError, Unreachable)


class Throttled(DeltapsError):
    """Rejected locally by adaptive throttling: too many recent reads failed."""

    code = "throttled"


@dataclass
class Prediction:
    probabilities: np.ndarray
    version: list[int]  # per-shard sequence numbers the answer reflects
    staleness_ms: float
    replica: str


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


MAX_PREHASHED_INSTANCES = 1 << 25  # their offsets alone fill the default 256 MiB message limit


def ids_message(model: str, rows, ids=None, n: int | None = None) -> m.PredictIds:
    """A `PredictIds` from a `Features` or from (rows, ids, n) arrays, checked here (raises
    InvalidInstance) and sent in CSR form."""
    if isinstance(rows, Features):
        rows, ids, n = rows.rows, rows.ids, rows.n
    if ids is None or n is None:
        raise DeltapsError("predict_ids needs a Features, or rows, ids and n")
    if isinstance(n, np.integer):
        n = int(n)
    features = check_features(n, np.asarray(rows, dtype=np.int64),
                              np.asarray(ids, dtype=np.uint64), MAX_PREHASHED_INSTANCES)
    offsets, ids = features.to_csr()
    return m.PredictIds(model, offsets, ids.astype(np.uint32))  # low 32 bits: see PredictIds


class _Failover:
    """What both clients share: attempt bookkeeping and the final error."""

    def __init__(self, addresses: Sequence[str], timeout: float, throttle, connect_timeout,
                 seed):
        if not addresses:
            raise DeltapsError("no serving replicas to talk to")
        self.addresses = list(addresses)
        self.timeout = timeout
        self.connect_timeout = min(timeout, 1.0) if connect_timeout is None else connect_timeout
        self.balancer = Balancer(len(self.addresses), random.Random(seed))
        if throttle is True:
            throttle = AdaptiveThrottle(rng=random.Random(seed))
        self.throttle: AdaptiveThrottle | None = throttle or None

    def _admit(self) -> None:
        if self.throttle is not None and not self.throttle.allow():
            requests, accepts = self.throttle.counts()
            raise Throttled(f"read rejected locally: the serving group failed recently "
                            f"({accepts} of {requests} recent requests accepted); retry later")

    def _outcome(self, k: int, accepted: bool, ok: bool) -> None:
        self.balancer.end(k, ok)
        if self.throttle is not None:
            self.throttle.record(accepted)

    def _failed(self, k: int, exc: DeltapsError, errors: list[str], codes: set[str]) -> None:
        """Record a failed attempt on replica k; re-raise a client mistake (no retry helps)."""
        code = exc.code
        retry = not isinstance(exc, RemoteError) or isinstance(exc, RETRYABLE)
        self._outcome(k, accepted=not retry, ok=not retry)
        if not retry:
            raise exc
        errors.append(str(exc))
        codes.add(code)

    @staticmethod
    def _give_up(errors: list[str], codes: set[str]) -> RemoteError:
        code = codes.pop() if len(codes) == 1 else "unavailable"
        return RemoteError(code, "no replica answered: " + "; ".join(errors))

    def _prediction(self, k: int, reply: m.PredictReply) -> Prediction:
        return Prediction(np.array(reply.probabilities), reply.version, reply.staleness_ms,
                          self.addresses[k])


class ServingClient(_Failover):
    """Synchronous client. `timeout`: seconds to wait for one replica's answer."""

    def __init__(self, addresses: Sequence[str], timeout: float = 5.0, *,
                 throttle: AdaptiveThrottle | bool | None = True,
                 connect_timeout: float | None = None, seed: int | None = None):
        super().__init__(addresses, timeout, throttle, connect_timeout, seed)
        self.channels = [self._channel(a) for a in self.addresses]

    @staticmethod
    def _channel(address: str) -> Channel:
        return Channel(address, immediate=True, monitor=True)

    @classmethod
    def from_cluster_file(cls, path: str | Path, timeout: float = 5.0, **kwargs) -> "ServingClient":
        return cls([n.address for n in ClusterFile.load(path).replicas()], timeout, **kwargs)

    def predict(self, model: str, instances: Sequence[Mapping]) -> Prediction:
        """Probabilities for every instance (feature dicts), from the first replica that answers."""
        return self._call(m.Predict(model, list(instances)))

    def predict_ids(self, model: str, rows, ids=None, n: int | None = None) -> Prediction:
        """Probabilities for pre-hashed instances: a `Features` (what `Featurizer` returns for
        the model's feature spec), or arrays `rows` (int64, instance of each id), `ids`
        (uint64 feature ids) and the instance count `n`."""
        return self._call(ids_message(model, rows, ids, n))

    def _pick(self, tried: set[int]) -> int | None:
        candidates = [k for k in range(len(self.channels)) if k not in tried]
        if not candidates:
            return None
        # a new client, or every untried replica restarting: wait a little for a connection
        up = writable([self.channels[k] for k in candidates], self.connect_timeout)
        return self.balancer.pick([candidates[i] for i in up]) if up else None

    def _call(self, msg: m.Message) -> Prediction:
        self._admit()
        errors: list[str] = []
        codes: set[str] = set()
        tried: set[int] = set()
        for _attempt in range(len(self.channels)):
            k = self._pick(tried)
            if k is None:
                break
            tried.add(k)
            self.balancer.begin(k)
            try:
                reply = self.channels[k].request(msg, self.timeout, self.connect_timeout)
            except (Timeout, Unreachable, RemoteError) as exc:
                if isinstance(exc, Timeout):
                    self._reset(k)
                self._failed(k, exc, errors, codes)
                continue
            self._outcome(k, accepted=True, ok=True)
            return self._prediction(k, reply)
        if not errors:
            errors.append(f"no connection to any of {len(tried) or len(self.channels)} "
                          f"replicas within {self.connect_timeout:.2f}s")
            codes.add("unreachable")
        raise self._give_up(errors, codes)

    def _reset(self, k: int) -> None:
        """Drop requests queued for an unresponsive replica by replacing its socket."""
        self.channels[k].close()
        self.channels[k] = self._channel(self.addresses[k])

    def close(self) -> None:
        for ch in self.channels:
            ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncServingClient(_Failover):
    """asyncio client: ``async with AsyncServingClient(addresses) as c: await c.predict(...)``.

    Many reads may be in flight at once (from many tasks); each replica's requests share one
    socket, and load is spread on the number of requests each replica has in flight. Use it
    from one event loop.
    """

    def __init__(self, addresses: Sequence[str], timeout: float = 5.0, *,
                 throttle: AdaptiveThrottle | bool | None = True,
                 connect_timeout: float | None = None, seed: int | None = None):
        super().__init__(addresses, timeout, throttle, connect_timeout, seed)
        self.channels: list[AsyncChannel] | None = None  # made on first use, on the caller's loop

    @classmethod
    def from_cluster_file(cls, path: str | Path, timeout: float = 5.0,
                          **kwargs) -> "AsyncServingClient":
        return cls([n.address for n in ClusterFile.load(path).replicas()], timeout, **kwargs)

    @staticmethod
    def _channel(address: str) -> AsyncChannel:
        return AsyncChannel(address, immediate=True, monitor=True)

    async def predict(self, model: str, instances: Sequence[Mapping]) -> Prediction:
        return await self._call(m.Predict(model, list(instances)))

    async def predict_ids(self, model: str, rows, ids=None, n: int | None = None) -> Prediction:
        return await self._call(ids_message(model, rows, ids, n))

    async def _pick(self, tried: set[int]) -> int | None:
        if self.channels is None:
            self.channels = [self._channel(a) for a in self.addresses]
            for ch in self.channels:
                ch.start()  # watch connections from now on
        candidates = [k for k in range(len(self.channels)) if k not in tried]
        if not candidates:
            return None
        up = [k for k in candidates if self.channels[k].writable()]
        deadline = time.monotonic() + self.connect_timeout
        while not up and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            up = [k for k in candidates if self.channels[k].writable()]
        return self.balancer.pick(up) if up else None

    async def _call(self, msg: m.Message) -> Prediction:
        self._admit()
        errors: list[str] = []
        codes: set[str] = set()
        tried: set[int] = set()
        for _attempt in range(len(self.addresses)):
            k = await self._pick(tried)
            if k is None:
                break
            tried.add(k)
            self.balancer.begin(k)
            try:
                reply = await self.channels[k].request(msg, self.timeout, self.connect_timeout)
            except (Timeout, Unreachable, RemoteError) as exc:
                self._failed(k, exc, errors, codes)
                continue
            except BaseException:  # cancelled: the request no longer counts as outstanding
                self.balancer.end(k, True)
                raise
            self._outcome(k, accepted=True, ok=True)
            return self._prediction(k, reply)
        if not errors:
            errors.append(f"no connection to any replica within {self.connect_timeout:.2f}s")
            codes.add("unreachable")
        raise self._give_up(errors, codes)

    async def aclose(self) -> None:
        for ch in self.channels or []:
            await ch.aclose()
        self.channels = None

    def close(self) -> None:
        for ch in self.channels or []:
            ch.close()
        self.channels = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
