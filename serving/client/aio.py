"""The asyncio serving client: the shared failover core driven with awaited channel calls."""
from __future__ import annotations

import asyncio
import time
from typing import Mapping, Sequence

from common.messages import Message, Predict
from common.transport import AsyncChannel
from serving.client.core import ClientCore, Connect, Prediction, Step, ids_message
from serving.client.throttle import AdaptiveThrottle


class AsyncServingClient(ClientCore):
    """asyncio client: ``async with AsyncServingClient(addresses) as c: await c.predict(...)``.

    Many reads may be in flight at once (from many tasks); each replica's requests share one
    socket, and load is spread on the number of requests each replica has in flight. Use it
    from one event loop. The decisions are the core's, the same as the blocking client's;
    this class only performs its steps with one `AsyncChannel` per replica.
    """

    def __init__(self, addresses: Sequence[str], timeout: float = 5.0, *,
                 throttle: AdaptiveThrottle | bool | None = True,
                 connect_timeout: float | None = None, seed: int | None = None):
        super().__init__(addresses, timeout, throttle=throttle, connect_timeout=connect_timeout,
                         seed=seed)
        self.channels: list[AsyncChannel] | None = None  # made on first use, on the caller's loop

    @staticmethod
    def _channel(address: str) -> AsyncChannel:
        # immediate: requests queue only on live connections; monitor: a drop is seen at once
        return AsyncChannel(address, immediate=True, monitor=True)

    async def predict(self, model: str, instances: Sequence[Mapping]) -> Prediction:
        """Probabilities for every instance (feature dicts), from the first replica that answers."""
        return await self._call(Predict(model, list(instances)))

    async def predict_ids(self, model: str, rows, ids=None, n: int | None = None) -> Prediction:
        """Probabilities for pre-hashed instances, given as for `ServingClient.predict_ids`."""
        return await self._call(ids_message(model, rows, ids, n))

    async def _call(self, msg: Message) -> Prediction:
        steps = self.failover()
        answer, error = None, None
        while True:
            try:
                step = steps.send(answer) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            try:
                answer, error = await self._perform(step, msg), None
            except BaseException as exc:  # cancelled too: the core decides what it means
                answer, error = None, exc

    async def _perform(self, step: Step, msg: Message):
        if isinstance(step, Connect):
            return await self._connected(step.candidates)
        return await self.channels[step.k].request(msg, self.timeout, self.connect_timeout)

    async def _connected(self, candidates: list[int]) -> list[int]:
        """Those candidates with a connection up, after waiting up to `connect_timeout` for one
        (connection state comes from each channel's monitor, so it is polled)."""
        if self.channels is None:
            self.channels = [self._channel(a) for a in self.addresses]
            for ch in self.channels:
                ch.start()  # watch connections from now on
        up = [k for k in candidates if self.channels[k].writable()]
        deadline = time.monotonic() + self.connect_timeout
        while not up and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            up = [k for k in candidates if self.channels[k].writable()]
        return up

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
