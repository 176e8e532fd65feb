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
twin, for many reads in flight at once. Both drive one failover core (`core.ClientCore`), which
makes every decision without I/O, so the two cannot behave differently; each only performs the
core's steps with its own channels. Modules: `throttle` (AdaptiveThrottle), `balance`
(Balancer), `core` (the failover decisions, Prediction, ids_message), `sync` and `aio` (the
two clients).
"""
from serving.client.aio import AsyncServingClient
from serving.client.balance import Balancer
from serving.client.core import (MAX_PREHASHED_INSTANCES, RETRYABLE, ClientCore, Prediction,
                                    ids_message)
from serving.client.sync import ServingClient
from serving.client.throttle import AdaptiveThrottle, Throttled

__all__ = ["AdaptiveThrottle", "AsyncServingClient", "Balancer", "ClientCore",
           "MAX_PREHASHED_INSTANCES", "Prediction", "RETRYABLE", "ServingClient", "Throttled",
           "ids_message"]
