"""The deep benchmark's yardstick: the same architecture as a plain Keras model in one process.

The model is Keras layers (an `Embedding` of 2**bits rows of width h0 summed over an event's
features, a bias and the activation, `Dense` layers, a logistic output) trained with
`train_on_batch` on the same events in the same order, one pass. Keras has no lazy Adam (its
Adam moves every row of the embedding at every step, which at 2**18 x 64 is most of the time
per batch), so `LazyAdam` below is the optimizer deltaps runs: Adam on the rows a batch
touches, each row with its own step count, and Adam on the dense variables, with epsilon
added to the root of the bias-corrected second moment (`common.optim.lazy_adam`). The loss
`train_on_batch` returns is computed before the step, so its running mean is the progressive
log loss, as deltaps measures it.

It starts from deltaps' initial values, so the two differ only in how they compute, not in
what. `python -m bench.deep_keras EVENTS SEED BATCH` trains it in a process of its own on the
deep benchmark's stream and prints the result as JSON: `bench.deep` runs it so, so that Keras
gets TensorFlow as a fresh process sets it up, not as the deep worker in the benchmark's
process set it up for itself (`worker.models.deep`). Inputs are the model's slots, one row of `width` per event: the planted nonlinear stream has
every field in every event, so its events all have the same number of features.
"""
from __future__ import annotations

import os
import time

import numpy as np

from common.config import ModelSpec
from common.deep import FIRST_BIAS, DeepLayout
from common.features import Featurizer, FeatureSpec
from common.sharding import slots_of

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def lazy_adam_class():
    import keras
    import tensorflow as tf

    def _tf(variable):
        """The tf.Variable under a Keras variable."""
        return variable.value if isinstance(variable, keras.Variable) else variable

    class LazyAdam(keras.optimizers.Optimizer):
        """Adam on the touched rows of a sparse gradient (each row its own step count), Adam
        on dense ones."""

        def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kwargs):
            super().__init__(learning_rate=learning_rate, name="lazy_adam", **kwargs)
            self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

        def build(self, variables):
            if self.built:
                return
            super().build(variables)
            self._m = [self.add_variable_from_reference(v, "m") for v in variables]
            self._v = [self.add_variable_from_reference(v, "v") for v in variables]
            self._t = [self.add_variable((v.shape[0],), name="t") for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            i = self._get_variable_index(variable)
            m, v, t = self._m[i], self._v[i], self._t[i]
            b1, b2, eps = self.beta_1, self.beta_2, self.epsilon
            if isinstance(gradient, tf.IndexedSlices):
                rows, at = tf.unique(gradient.indices)
                g = tf.math.unsorted_segment_sum(gradient.values, at, tf.shape(rows)[0])
                # gathers from the variables themselves (a read of a whole variable would
                # make the scatter below copy all of it)
                t1 = tf.gather(_tf(t), rows) + 1.0
                m1 = b1 * tf.gather(_tf(m), rows) + (1 - b1) * g
                v1 = b2 * tf.gather(_tf(v), rows) + (1 - b2) * g * g
                step = (m1 / (1 - tf.pow(b1, t1))[:, None]) \
                    / (tf.sqrt(v1 / (1 - tf.pow(b2, t1))[:, None]) + eps)
                self.assign(variable, tf.IndexedSlices(tf.gather(_tf(variable), rows)
                                                       - learning_rate * step, rows))
                self.assign(m, tf.IndexedSlices(m1, rows))
                self.assign(v, tf.IndexedSlices(v1, rows))
                self.assign(t, tf.IndexedSlices(t1, rows))
                return
            t1 = tf.cast(self.iterations + 1, variable.dtype)
            self.assign(m, b1 * m + (1 - b1) * gradient)
            self.assign(v, b2 * v + (1 - b2) * gradient * gradient)
            self.assign_sub(variable, learning_rate * (m / (1 - b1 ** t1))
                            / (tf.sqrt(v / (1 - b2 ** t1)) + eps))

    return LazyAdam


def build_model(spec: ModelSpec, width: int):
    """The Keras model of `spec`'s architecture over `width` slots per event (logit out)."""
    import keras
    from keras import layers, ops

    class SumBias(layers.Layer):
        """The sparse layer's sum over an event's rows plus its bias b0, then activation."""

        def __init__(self, units, activation, **kwargs):
            super().__init__(**kwargs)
            self.b0 = self.add_weight(shape=(units,), initializer=keras.initializers.Constant(
                FIRST_BIAS), name="b0")
            self.act = keras.activations.get(activation)

        def call(self, rows):
            return self.act(ops.sum(rows, axis=1) + self.b0)

    class RowLookup(layers.Layer):
        """`Embedding` reading only the rows asked for: Keras's own reads the whole table
        into a tensor at every step, and TensorFlow then copies the whole table before the
        optimizer's scatter into it (the buffer is shared), most of a step at 2**18 x 64."""

        def __init__(self, rows, width, **kwargs):
            super().__init__(**kwargs)
            self.embeddings = self.add_weight(shape=(rows, width), initializer="zeros",
                                              name="embeddings")

        def call(self, slots):
            import tensorflow as tf
            return tf.gather(self.embeddings.value, slots)

    h = spec.hidden
    slots = keras.Input((width,), dtype="int64")
    x = RowLookup(spec.slots, h[0])(slots)
    x = SumBias(h[0], spec.activation)(x)
    for units in h[1:]:
        x = layers.Dense(units, activation=spec.activation)(x)
    model = keras.Model(slots, layers.Dense(1)(x))
    # deltaps' initial values: zero rows, the same dense draws (common.deep)
    layout = DeepLayout.of(spec)
    model.set_weights([np.zeros((spec.slots, h[0]), np.float32)]
                      + layout.split(layout.initial_dense()))
    opt = spec.optimizer
    model.compile(optimizer=lazy_adam_class()(opt.learning_rate, opt.beta1, opt.beta2,
                                              opt.epsilon),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=False)
    return model


def train_keras(spec: ModelSpec, features: FeatureSpec, source, batch_size: int) -> dict:
    """One pass over `source` in batches: events/s (featurizing included, as the worker's is)
    and the progressive log loss. The first batch, in which Keras traces its train function,
    is learned and scored but not timed, as the worker traces and compiles its step when its
    learner is made, before its clock starts."""
    featurizer = Featurizer(features)
    model = None
    events, loss_sum = 0, 0.0
    start, untimed = None, 0
    while (batch := source.read(batch_size)) is not None:
        f = featurizer.featurize(batch)
        _offsets, ids = f.to_csr()
        width = ids.size // f.n
        if width * f.n != ids.size:
            raise ValueError("the Keras yardstick needs the same number of features per event")
        slots = slots_of(ids, spec.bits).view(np.int64).reshape(f.n, width)
        if model is None:
            model = build_model(spec, width)
        loss = model.train_on_batch(slots, batch.labels.astype(np.float32)[:, None])
        loss_sum += float(loss) * f.n
        events += f.n
        if start is None:
            start, untimed = time.perf_counter(), events
    seconds = time.perf_counter() - start if start else 0.0
    return {"events": events, "seconds": round(seconds, 3),
            "events_per_s": round((events - untimed) / seconds, 1) if seconds else 0.0,
            "logloss": loss_sum / events if events else float("nan")}


def main(argv: list[str]) -> None:
    import json

    from bench.deep import SPEC
    from bench.training import MemorySource, take
    from common.config import load_spec
    from worker.sources.nonlinear import NonlinearStream

    events, seed, batch_size = (int(a) for a in argv)
    spec = load_spec(text=SPEC)
    chunks = take(NonlinearStream(events, seed), None)
    result = train_keras(spec.model("deep"), spec.feature_spec("deep"),
                         MemorySource(chunks, batch_size), batch_size)
    print(json.dumps(result))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
