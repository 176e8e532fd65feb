"""The synthetic stream as an event source: a seeded, Criteo-like stream from a planted model.

Why: tests and benchmarks need a stream of any length whose best achievable logloss is known
(the planted model's, `worker.sources.planted`), so learning quality can be measured against
that floor. `synthetic_spec_toml` is the cluster spec that models it.

Determinism: chunk k of the stream (events ``[k*chunk_size, (k+1)*chunk_size)``) is drawn from
``numpy.random.default_rng([seed, 1, k])`` alone, so any chunk can be regenerated in O(chunk),
and a shorter stream with the same seed is a prefix of a longer one.
"""
from __future__ import annotations

import numpy as np

from common.features import Batch
from worker.sources.base import ChunkedSource
from worker.sources.planted import PlantedModel, binary_entropy, calibrate_bias, draw_events

DEFAULT_CHUNK = 65536
_CALIBRATION_EVENTS = 1 << 15


class SyntheticStream(ChunkedSource):
    """`events` Criteo-like events from a planted logistic model; a source like the file ones.

    Why a source like the file ones: the trainer, the CLI and the benchmarks read it through
    the same `read(max_events)` (None at the end), so a planted run measures exactly the code
    path a file run takes, minus parsing. `bayes_logloss` is the mean binary entropy of the
    true probabilities over events read so far: the expected logloss of the true model, the
    floor for any learner. `true_probabilities` are those of the last batch.
    """

    kind = "synthetic"  # the source's name prefix

    def __init__(self, events: int, seed: int = 0, *, click_rate: float = 0.22,
                 signal: float = 1.0, chunk_size: int = DEFAULT_CHUNK):
        if events < 0 or seed < 0 or chunk_size < 1:
            raise ValueError("events and seed must be >= 0 and chunk_size >= 1")
        if not 0.0 < click_rate < 1.0:
            raise ValueError(f"click_rate must be in (0, 1), got {click_rate}")
        self.events, self.seed, self.chunk_size = events, seed, chunk_size
        self.model = self.planted(seed, signal)
        _, margins = self.draw(np.random.default_rng([seed, 2]), _CALIBRATION_EVENTS)
        self.model.bias = calibrate_bias(margins, click_rate)
        self._entropy_sum = 0.0
        self._oracle_loss_sum = 0.0
        self.true_probabilities = np.zeros(0)
        super().__init__(f"{self.kind}:{events}:{seed}")

    @staticmethod
    def planted(seed: int, signal: float):
        """The stream's true model (a subclass plants another)."""
        return PlantedModel(seed, signal)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[Batch, np.ndarray]:
        """n events and their true margins without the bias."""
        return draw_events(rng, n, self.model)

    def chunk(self, k: int) -> tuple[Batch, np.ndarray]:
        """Chunk k of the stream and its true click probabilities (reproducible on its own).

        A chunk is always drawn whole, then cut to the stream's length, so the stream does not
        depend on `events`.
        """
        start = k * self.chunk_size
        if not 0 <= start < self.events:
            raise IndexError(f"chunk {k} is outside a stream of {self.events} events")
        rng = np.random.default_rng([self.seed, 1, k])
        batch, margin = self.draw(rng, self.chunk_size)
        probs = 1.0 / (1.0 + np.exp(-(margin + self.model.bias)))
        batch.labels = (rng.random(self.chunk_size) < probs).astype(np.float32)
        n = min(self.chunk_size, self.events - start)
        if n < self.chunk_size:
            return batch.slice(0, n), probs[:n]
        return batch, probs

    def _chunks_with_aux(self):
        for k in range(-(-self.events // self.chunk_size)):
            yield self.chunk(k)

    def _on_batch(self, batch: Batch, probs: np.ndarray) -> None:
        """Keep the batch's true probabilities and accumulate the Bayes and oracle loglosses."""
        self.true_probabilities = probs
        self._entropy_sum += float(binary_entropy(probs).sum())
        p = np.clip(probs, 1e-15, 1 - 1e-15)
        self._oracle_loss_sum += float(-np.where(batch.labels > 0, np.log(p), np.log1p(-p)).sum())

    @property
    def bayes_logloss(self) -> float:
        """Mean binary entropy of the true probabilities of the events read so far (nats)."""
        return self._entropy_sum / self.stats.events if self.stats.events else float("nan")

    @property
    def oracle_logloss(self) -> float:
        """Realized logloss of the true probabilities on the labels read so far (nats)."""
        return self._oracle_loss_sum / self.stats.events if self.stats.events else float("nan")


def synthetic_spec_toml(bits: int = 22) -> str:
    """A cluster spec for the planted stream: model "ctr", categorical ids sent as numbers."""
    lines = ["# Model for the synthetic planted stream (worker/sources/synthetic.py).",
             "# c1..c26 are category ids: numbers in JSON instances are ids, not amounts."]
    for k in range(1, 27):
        lines += [f"[transforms.c{k}]", 'kind = "categorical"']
    lines += ["[models.ctr]", f"bits = {bits}",
              "transforms = [" + ", ".join(f'"c{k}"' for k in range(1, 27)) + "]",
              "[models.ctr.optimizer]", 'name = "ftrl"', "learning_rate = 0.1"]
    return "\n".join(lines) + "\n"
