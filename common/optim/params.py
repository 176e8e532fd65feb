"""The hyper-parameters every optimizer function reads, packed in one float64 vector so that one
compiled kernel serves every optimizer (numba passes an array without boxing a spec object)."""
from __future__ import annotations

import numpy as np

LR, BETA, L1, L2, BETA1, BETA2, EPS = range(7)


def hyper_parameters(spec) -> np.ndarray:
    """`spec`: a `common.config.OptimizerSpec`."""
    return np.array([spec.learning_rate, spec.beta, spec.l1, spec.l2, spec.beta1, spec.beta2,
                     spec.epsilon], np.float64)
