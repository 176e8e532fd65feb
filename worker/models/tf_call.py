"""Calling one traced TensorFlow function on NumPy arrays with as little overhead as TensorFlow
allows: the deep learner calls its step once per mini-batch, and at batch 1024 the public
path's per-call costs are a large share of the step.

`ConcreteFunction.__call__` binds its arguments to the structured signature, checks them,
flattens them and looks up captured inputs before it runs the function, and `tf.constant`
converts each array through TensorFlow's generic conversion machinery. The function is traced
once with a fixed input signature of plain tensors, so none of that can change the outcome:
`flat_call` runs the traced function's `AtomicFunction` on tensors made directly from the
arrays (`EagerTensor`), which TensorFlow's own `ConcreteFunction` does after its checks.
Those two names are TensorFlow internals (`tensorflow.python`); where a TensorFlow version
lacks them, the public call is used, which gives the same results more slowly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf


def flat_call(concrete) -> Callable[..., list]:
    """A function of NumPy arrays (C-contiguous, of the dtypes of `concrete`'s inputs, in its
    input order) that returns `concrete`'s outputs as a flat list of eager tensors."""
    try:
        from tensorflow.python.eager import context
        from tensorflow.python.framework import ops

        atomic = concrete._inference_function
        run, make = atomic.call_flat, ops.EagerTensor
        device = context.context().device_name
        dtypes = [spec.dtype.as_datatype_enum for spec in concrete.structured_input_signature[0]]
    except (ImportError, AttributeError):
        return lambda *arrays: list(concrete(*(tf.constant(a) for a in arrays)))

    def call(*arrays: np.ndarray) -> list:
        return run(*(make(a, device, d) for a, d in zip(arrays, dtypes)))

    return call
