"""The hyper-parameters every optimizer function reads, packed in one float64 vector so that one
compiled kernel serves every optimizer (numba passes an array without boxing a spec object)."""
from __future__ import annotations

import numpy as np

LR, BETA, L1, L2, BETA1, BETA2, EPS, INV_LR = range(8)


def hyper_parameters(spec) -> np.ndarray:
    """`spec`: a `common.config.OptimizerSpec`. The last entry is 1 / learning rate, for the
    optimizers that divide by the rate once per coordinate update (FTRL): a multiplication
    instead takes the divider, the busiest unit of the learning loop, out of its way."""
    return np.array([spec.learning_rate, spec.beta, spec.l1, spec.l2, spec.beta1, spec.beta2,
                     spec.epsilon, 1.0 / spec.learning_rate], np.float64)
