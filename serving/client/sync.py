"""The blocking serving client: the shared failover core driven with blocking channel calls."""
from __future__ import annotations

from typing import Mapping, Sequence

from common.messages import Message, Predict
from common.errors import Timeout
from common.transport import Channel, writable
from serving.client.core import ClientCore, Connect, Prediction, Step, ids_message
from serving.client.throttle import AdaptiveThrottle


class ServingClient(ClientCore):
    """Synchronous client, for one thread at a time: each read waits for its answer. The
    decisions are the core's; this class only performs its steps with one `Channel` per
    replica. `timeout`: seconds to wait for one replica's answer."""

    def __init__(self, addresses: Sequence[str], timeout: float = 5.0, *,
                 throttle: AdaptiveThrottle | bool | None = True,
                 connect_timeout: float | None = None, seed: int | None = None):
        super().__init__(addresses, timeout, throttle=throttle, connect_timeout=connect_timeout,
                         seed=seed)
        self.channels = [self._channel(a) for a in self.addresses]

    @staticmethod
    def _channel(address: str) -> Channel:
        # immediate: requests queue only on live connections; monitor: a drop is seen at once
        return Channel(address, immediate=True, monitor=True)

    def predict(self, model: str, instances: Sequence[Mapping]) -> Prediction:
        """Probabilities for every instance (feature dicts), from the first replica that answers."""
        return self._call(Predict(model, list(instances)))

    def predict_ids(self, model: str, rows, ids=None, n: int | None = None) -> Prediction:
        """Probabilities for pre-hashed instances: a `Features` (what `Featurizer` returns for
        the model's feature spec), or arrays `rows` (int64, instance of each id), `ids`
        (uint64 feature ids) and the instance count `n`."""
        return self._call(ids_message(model, rows, ids, n))

    def _call(self, msg: Message) -> Prediction:
        steps = self.failover()
        answer, error = None, None
        while True:
            try:
                step = steps.send(answer) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            try:
                answer, error = self._perform(step, msg), None
            except BaseException as exc:  # the core decides what it means
                answer, error = None, exc

    def _perform(self, step: Step, msg: Message):
        if isinstance(step, Connect):
            # a new client, or every untried replica restarting: wait a little for a connection
            up = writable([self.channels[k] for k in step.candidates], self.connect_timeout)
            return [step.candidates[i] for i in up]
        try:
            return self.channels[step.k].request(msg, self.timeout, self.connect_timeout)
        except Timeout:
            self._reset(step.k)
            raise

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
