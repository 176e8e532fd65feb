"""Server-side optimizers, applied to a shard's rows with whole-array numpy operations.

Each optimizer owns named per-row state arrays (always including "w", the weights) and updates
the rows a push names in one vectorized step. The rows of one push are unique, so plain fancy
indexing (no scatter-add) is exact. The formulas follow the usual references:
- FTRL-Proximal: McMahan et al., "Ad Click Prediction: a View from the Trenches" (KDD 2013);
  state z and n per coordinate, the weight is the closed-form proximal solution.
- AdaGrad: Duchi, Hazan, Singer (2011), diagonal version, with L1/L2 applied proximally.
- SGD: plain gradient step with L2 decay and L1 soft-thresholding.
"""
from __future__ import annotations

import numpy as np

from common.config import OptimizerSpec


class Optimizer:
    state_names: tuple[str, ...] = ("w",)

    def __init__(self, spec: OptimizerSpec):
        self.spec = spec

    def init_state(self, size: int) -> dict[str, np.ndarray]:
        return {name: np.zeros(size, dtype=np.float32) for name in self.state_names}

    def apply(self, state: dict[str, np.ndarray], rows: np.ndarray, grads: np.ndarray) -> None:
        raise NotImplementedError


def _soft_threshold(x: np.ndarray, t) -> np.ndarray:
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


class FTRLProximal(Optimizer):
    state_names = ("w", "z", "n")

    def apply(self, state, rows, grads):
        s = self.spec
        z, n = state["z"][rows], state["n"][rows]
        w = state["w"][rows]
        g = grads.astype(np.float32, copy=False)
        n_new = n + g * g
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / s.learning_rate
        z = z + g - sigma * w
        denom = (s.beta + np.sqrt(n_new)) / s.learning_rate + s.l2
        w_new = np.where(np.abs(z) <= s.l1, 0.0, -(z - np.sign(z) * s.l1) / denom)
        state["z"][rows] = z
        state["n"][rows] = n_new
        state["w"][rows] = w_new


class AdaGrad(Optimizer):
    state_names = ("w", "g2")

    def apply(self, state, rows, grads):
        s = self.spec
        w = state["w"][rows]
        g = grads.astype(np.float32, copy=False) + s.l2 * w
        g2 = state["g2"][rows] + g * g
        step = s.learning_rate / (s.beta + np.sqrt(g2))
        state["g2"][rows] = g2
        state["w"][rows] = _soft_threshold(w - step * g, step * s.l1)


class SGD(Optimizer):
    def apply(self, state, rows, grads):
        s = self.spec
        w = state["w"][rows]
        g = grads.astype(np.float32, copy=False) + s.l2 * w
        state["w"][rows] = _soft_threshold(w - s.learning_rate * g, s.learning_rate * s.l1)


OPTIMIZERS: dict[str, type[Optimizer]] = {"ftrl": FTRLProximal, "adagrad": AdaGrad, "sgd": SGD}


def make_optimizer(spec: OptimizerSpec) -> Optimizer:
    return OPTIMIZERS[spec.name](spec)
