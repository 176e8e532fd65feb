"""The failover core both serving clients share, written once and free of I/O.

What a read decides (whether the throttle lets it out, which replica gets it, how an attempt's
outcome is recorded, whether to retry elsewhere or give up, what the `Prediction` is) is the
same for the blocking and the asyncio client; only how a request travels differs. So the
decisions live in one generator, `ClientCore.failover`, in the sans-I/O style of h11: it yields
the I/O it needs, a `Connect` (which of these replicas has a connection up?) or a `Send` (send
the request to this replica), and is sent the answer, or thrown the exception the attempt
raised. Each client is a short loop that performs those steps with its own channels, and the
core can be tested with scripted outcomes, without sockets.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Sequence

import numpy as np

from common.messages import PredictIds
from common.config import ClusterFile
from common.errors import DeltapsError, InternalError, NotReady, RemoteError, Timeout
from common.features import Features
from common.instances import check_features
from common.transport import Unreachable
from serving.client.balance import Balancer
from serving.client.throttle import AdaptiveThrottle, Throttled

# Errors another replica may not share: the read is retried elsewhere. Every other error reply
# is a client mistake (unknown model, invalid instance) and is raised at once.
RETRYABLE = (NotReady, Timeout, InternalError, Unreachable)

MAX_PREHASHED_INSTANCES = 1 << 25  # their offsets alone fill the default 256 MiB message limit


@dataclass
class Prediction:
    """One read's answer, with what it reflects: the model version (per shard) and its age."""

    probabilities: np.ndarray
    version: list[int]  # per-shard sequence numbers the answer reflects
    staleness_ms: float
    replica: str


def ids_message(model: str, rows, ids=None, n: int | None = None) -> PredictIds:
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
    return PredictIds(model, offsets, ids.astype(np.uint32))  # low 32 bits: see PredictIds


@dataclass(slots=True)
class Connect:
    """Step: wait up to `connect_timeout` for a connection to any of these replicas (indices);
    answer with those that have one (empty: none came up in time)."""

    candidates: list[int]


@dataclass(slots=True)
class Send:
    """Step: send the read to replica `k`; answer with its reply, or throw in what the attempt
    raised (Timeout, Unreachable, RemoteError; anything else ends the read, and the attempt
    no longer counts as in flight)."""

    k: int


Step = Connect | Send


class ClientCore:
    """What both clients share: the replicas, the policies (`Balancer`, `AdaptiveThrottle`)
    and the failover decisions of a read, so the two faces cannot drift apart.

    `timeout`: seconds to wait for one replica's answer; `connect_timeout` (default: the
    smaller of `timeout` and 1 s): how long to wait for a connection to some replica.
    `throttle`: True for the default `AdaptiveThrottle`, one of your own, or False/None for none.
    """

    def __init__(self, addresses: Sequence[str], timeout: float = 5.0, *,
                 throttle: AdaptiveThrottle | bool | None = True,
                 connect_timeout: float | None = None, seed: int | None = None):
        if not addresses:
            raise DeltapsError("no serving replicas to talk to")
        self.addresses = list(addresses)
        self.timeout = timeout
        self.connect_timeout = min(timeout, 1.0) if connect_timeout is None else connect_timeout
        self.balancer = Balancer(len(self.addresses), random.Random(seed))
        if throttle is True:
            throttle = AdaptiveThrottle(rng=random.Random(seed))
        self.throttle: AdaptiveThrottle | None = throttle or None

    @classmethod
    def from_cluster_file(cls, path: str | Path, timeout: float = 5.0, **kwargs):
        """A client for every serving replica the cluster file lists."""
        return cls([n.address for n in ClusterFile.load(path).replicas()], timeout, **kwargs)

    def failover(self) -> Generator[Step, object, Prediction]:
        """One read's decisions: yields the `Step`s to perform, returns the `Prediction`, or
        raises `Throttled`, a client mistake (at once) or, once every replica reachable has been
        tried (each at most once), a RemoteError naming what went wrong with each."""
        self._admit()
        errors: list[str] = []
        codes: set[str] = set()
        tried: set[int] = set()
        for _attempt in range(len(self.addresses)):
            up = yield Connect([k for k in range(len(self.addresses)) if k not in tried])
            if not up:
                break
            k = self.balancer.pick(up)
            tried.add(k)
            self.balancer.begin(k)
            try:
                reply = yield Send(k)
            except (Timeout, Unreachable, RemoteError) as exc:
                self._failed(k, exc, errors, codes)
                continue
            except BaseException:  # cancelled or interrupted: no longer in flight
                self.balancer.end(k, True)
                raise
            self._outcome(k, accepted=True, ok=True)
            return Prediction(np.array(reply.probabilities), reply.version, reply.staleness_ms,
                              self.addresses[k])
        if not errors:
            errors.append(f"no connection to any of {len(self.addresses)} replicas within "
                          f"{self.connect_timeout:.2f}s")
            codes.add("unreachable")
        code = codes.pop() if len(codes) == 1 else "unavailable"
        raise RemoteError(code, "no replica answered: " + "; ".join(errors))

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
