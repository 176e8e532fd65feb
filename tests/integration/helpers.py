"""Shared test helpers: in-memory event streams, waiting for replicas, reading shard weights."""
from __future__ import annotations

import signal
import subprocess
import time

import numpy as np

from common import optim
from common.config import OptimizerSpec
from common.features import Batch, Featurizer, columnarize
from common.linear import margins, sigmoid
from common.sharding import slots_of
from deploy.admin import node_status
from worker.ps_client import PSClient

SMALL_SPEC = """
[models.ctr]
bits = 16
crosses = [["user", "item"]]
"""


def planted_events(n: int, seed: int = 0) -> list[dict]:
    """Events whose label depends on user and item, so a model can learn something."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 50, n)
    items = rng.integers(0, 30, n)
    logit = np.sin(users * 1.3) + np.cos(items * 0.7) - 0.3
    labels = rng.random(n) < 1 / (1 + np.exp(-2 * logit))
    return [{"label": int(y), "features": {"user": f"u{u}", "item": f"i{i}", "age": float(u % 60)}}
            for u, i, y in zip(users, items, labels)]


class ListSource:
    """A source over a list of event dicts, honouring the size each read asks for."""

    def __init__(self, events: list[dict]):
        self.events = events
        self.pos = 0

    def read(self, max_events: int) -> Batch | None:
        if self.pos >= len(self.events):
            return None
        chunk = self.events[self.pos:self.pos + max_events]
        self.pos += len(chunk)
        return columnarize(chunk, with_labels=True)


def wait_replica_caught_up(address: str, model: str, seqs: dict[int, int],
                           timeout: float = 10.0) -> list[int]:
    """Until the replica's version reaches `seqs` ({shard: seq}); returns the version."""
    deadline = time.monotonic() + timeout
    while True:
        st = node_status(address, timeout=1.0)
        if st:
            version = st["models"][model]["version"]
            if st["models"][model]["ready"] and all(version[k] >= s for k, s in seqs.items()):
                return version
        if time.monotonic() > deadline:
            raise TimeoutError(f"replica at {address} did not reach {seqs}: {st}")
        time.sleep(0.02)


def shard_weights(client: PSClient, model: str, bits: int,
                  optimizer: OptimizerSpec | None = None) -> np.ndarray:
    """Every weight of a model, computed from its state read from the shards exactly as the
    shards compute the weights they publish (default optimizer: the default FTRL)."""
    optimizer = optimizer or OptimizerSpec()
    state = client.pull(model, np.arange(1 << bits, dtype=np.uint64))
    module = optim.get(optimizer.name)
    return module.weights({c: state[:, j] for j, c in enumerate(module.COLUMNS)}, optimizer)


def score_locally(spec, model: str, weights: np.ndarray, instances: list[dict]) -> np.ndarray:
    """What a replica holding `weights` must answer, computed without any replica."""
    batch = columnarize(instances, with_labels=False)
    features = Featurizer(spec.feature_spec(model)).featurize(batch)
    slots = slots_of(features.ids, spec.model(model).bits)
    return sigmoid(margins(features, weights[slots])).astype(np.float32)


def stopped_by_sigterm(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """SIGTERM `proc` and wait for it to end: its (stdout, stderr). Killed if it outlives
    `timeout` (the test then sees its exit code), so no test leaves a process behind."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
