"""The deep sparse model's learner: one mini-batch step in TensorFlow on the pulled rows.

Per batch the worker pulls the state of the sparse rows its events touch and of every dense row
(`common.deep.DeepLayout`: each row is w, m, v of width h0 and a step count t), then one
`tf.function` call computes, on that local copy, the forward pass (the sparse layer as one
`tf.sparse.segment_sum` of the touched rows per event over the batch's (event, row) pairs,
gather and sum in one op, then the dense layers), which gives the events' progressive
predictions (made before the batch is learned), and the mini-batch gradient of the mean
weighted log loss with respect to each event's sum of rows and to the dense parameters. Then
one compiled loop (`common.optim.lazy_adam.step_summed_rows`) finishes the backward pass of
the sparse layer (a row's gradient is the sum of its events' gradients) and takes one Adam
step on every pulled row, each row with its own step count, returning the change of every
state value: the push. The sparse rows pulled are exactly those the batch touches, so on them
this is lazy Adam (DeepBird's sparse-layer optimizer; TensorFlow's LazyAdamOptimizer), and the
dense rows are pulled and stepped every batch, so on them it is Adam (`common.optim.adam`).
Shards add the push like a linear model's. The step and that last sum run outside TensorFlow
because a dozen elementwise TF ops over the rows, and a second segment sum, cost more in
dispatch than one fused loop does in arithmetic.

TensorFlow is imported only here: shards, replicas and linear workers never load it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from common.config import ModelSpec
from common.deep import DeepLayout
from common.optim import hyper_parameters, lazy_adam
from common.features import Features
from worker.keys import BatchKeys
from worker.models.prebuilt import kernel
from worker.models.tf_call import flat_call

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no start-up banner on every worker
try:
    import tensorflow as tf
except ImportError as exc:  # a linear-only install
    raise ImportError(f"deep models train with TensorFlow, which is not installed ({exc}): "
                      "pip install 'deltaps[deep]'") from exc



def _few_threads() -> None:
    """One thread in each of TensorFlow's pools (inter-op and intra-op) unless the environment
    asks for more (TF_NUM_INTEROP_THREADS, TF_NUM_INTRAOP_THREADS). A step's ops are small, so
    spreading them over more threads mostly hands work from thread to thread, and a worker
    shares its machine with its own helper thread and often with shards and replicas, whose
    CPU those threads would take. Set before TensorFlow starts its runtime; a process in which
    it already runs keeps what it has."""
    try:
        if not os.environ.get("TF_NUM_INTEROP_THREADS"):
            tf.config.threading.set_inter_op_parallelism_threads(1)
        if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
            tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow's runtime is already up in this process
        pass


_few_threads()
ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.math.tanh, "sigmoid": tf.math.sigmoid,
               "elu": tf.nn.elu}


def split_dense(layout: DeepLayout, flat):
    """The dense parameters (tensors) from their flat vector, in `layout.shapes` order."""
    out, at = [], 0
    for _, shape in layout.shapes:
        size = int(np.prod(shape))
        out.append(tf.reshape(flat[at:at + size], shape))
        at += size
    return out


def logits_tf(layout: DeepLayout, sums, params):
    """The model's logits from each event's sum of sparse rows: `common.deep.forward` in TF."""
    act = ACTIVATIONS[layout.activation]
    a = act(sums + params[0])
    for layer in range(1, len(layout.hidden)):
        a = act(tf.matmul(a, params[2 * layer - 1]) + params[2 * layer])
    return tf.matmul(a, params[-2])[:, 0] + params[-1][0]


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities in float64 from float32 logits. Not TensorFlow's float32 sigmoid: that
    rounds every logit above about 17 to exactly 1 (and far below 0 to tiny values), so a
    confident wrong prediction would be scored at the log loss's clip (34.5 nats) instead of
    its true loss, about the logit: progressive log loss would count what the model did not
    do. The same clip as the replicas' `common.deep.forward`."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -35.0, 35.0)))


def _segments(offsets: np.ndarray) -> np.ndarray:
    """Sorted segment ids from CSR offsets: entry e of group i gets i."""
    return np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))


@dataclass
class StepPairs:
    """A batch's (event, row) pairs, as its step uses them: grouped by event as the rows of one
    (2, E) array (row indices, sorted event ids) for the forward sum in TensorFlow, and grouped
    by row in CSR form (offsets, event indices) for the gradient sum of each row."""

    by_event: np.ndarray
    row_offsets: np.ndarray
    row_events: np.ndarray


@dataclass
class DeepBatchKeys(BatchKeys):
    """A deep batch's keys, and the (event, row) pairs of its step when already worked out."""

    pairs: StepPairs | None = None


class DeepLearner:
    """A deep model's fixed layout and hyper-parameters, and one batch's learning step."""

    # a trainer indexes the keys, with the step's (event, row) pairs, on its helper thread:
    # the TensorFlow step makes the learning thread the busier one (`Trainer.send_pull`)
    keys_on_helper = True

    def __init__(self, spec: ModelSpec):
        self.layout = layout = DeepLayout.of(spec)
        self.dense_keys = layout.dense_keys()
        opt = spec.optimizer
        self.hp = hyper_parameters(opt)
        # one concrete function, called with three tensors: binding and converting arguments
        # costs TensorFlow far more per argument than running the whole step does, so the
        # forward sum's index arrays travel as one (2, E) int64 array and the labels and
        # importances as one (2, n) float32 array (n comes from its shape), and the call skips
        # the public call's checks (`tf_call`). Of the pulled state only the weights go in (a
        # third of it: the moments and step counts are for the Adam step, outside
        # TensorFlow), so converting it copies a third as much. No autograph: the step has no
        # control flow on tensors to convert, and tracing it plainly is quicker at start
        self._step = flat_call(tf.function(self._step_fn, autograph=False, input_signature=[
            tf.TensorSpec([None, layout.width], tf.float32),
            tf.TensorSpec([2, None], tf.int64), tf.TensorSpec([2, None], tf.float32)],
        ).get_concrete_function())
        self._group = kernel().group_by_event  # prebuilt when built, else numba's JIT
        self._warm_up()

    def _warm_up(self) -> None:
        """Run every compiled piece once on a one-event batch, so that loading numba's JIT
        kernels and TensorFlow's first run of the step (graph optimization) happen when the
        learner is made, with the rest of a worker's start, and not in its first batch."""
        layout = self.layout
        state = np.zeros((1 + layout.dense_rows, layout.row_width), np.float32)
        pairs = StepPairs(np.zeros((2, 1), np.int64), np.array([0, 1]), np.zeros(1, np.int64))
        _p, deltas = self._step_rows(state, pairs, np.zeros((2, 1), np.float32))
        self._group(1, np.zeros(1, np.int64), np.zeros(1, np.int64))
        keys = np.arange(state.shape[0], dtype=np.uint64)
        kernel().patch_rows(keys, state, np.zeros(keys.size, np.int64), keys, deltas, 1)

    def batch_keys(self, keys: BatchKeys, features: Features | None = None) -> BatchKeys:
        """The keys a batch pulls and pushes: its sparse slots, then every dense row (their
        keys follow all slots, so the whole stays sorted). Given the batch's `features`, also
        its (event, row) pairs for the step (`_pairs`), so that a trainer works them out with
        the keys, on its helper thread, rather than while it learns."""
        out = DeepBatchKeys(np.concatenate([keys.slots, self.dense_keys]), keys.inverse)
        if features is not None:
            out.pairs = self._pairs(features, out)
        return out

    def learn(self, features: Features, keys: BatchKeys, state: np.ndarray, labels: np.ndarray,
              importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(progressive probabilities of the events, float32 deltas of the pulled `state`)."""
        want = (keys.slots.size, self.layout.row_width)
        if state.shape != want:
            raise ValueError(f"pulled state of shape {list(state.shape)}, expected {list(want)}")
        n = features.n
        targets = np.empty((2, n), np.float32)
        targets[0] = labels
        targets[1] = 1.0 if importance is None else importance
        return self._step_rows(state, self._pairs_of(features, keys), targets)

    def predict(self, features: Features, keys: BatchKeys, state: np.ndarray) -> np.ndarray:
        """Probabilities from pulled state, without learning (the worker's forward pass)."""
        logits, _g_sums, _g_flat = self._call(state, self._pairs_of(features, keys),
                                              np.zeros((2, features.n), np.float32))
        return _sigmoid(logits)

    def _step_rows(self, state: np.ndarray, pairs: StepPairs,
                   targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(progressive probabilities, deltas): TensorFlow's forward and backward pass, then
        each row's gradient summed and its Adam step taken in one compiled loop."""
        logits, g_sums, g_flat = self._call(state, pairs, targets)
        layout = self.layout
        g_dense = np.zeros(layout.dense_rows * layout.width, np.float32)
        g_dense[:layout.dense_size] = g_flat
        deltas = lazy_adam.step_summed_rows(state, g_sums, pairs.row_offsets, pairs.row_events,
                                            g_dense.reshape(layout.dense_rows, layout.width),
                                            self.hp)
        return _sigmoid(logits), deltas

    def _call(self, state: np.ndarray, pairs: StepPairs,
              targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, d loss / d each event's sum of rows, d loss / d the dense parameters)."""
        weights = np.ascontiguousarray(state[:, :self.layout.width], np.float32)
        return tuple(t.numpy() for t in self._step(weights, pairs.by_event, targets))

    def _pairs_of(self, features: Features, keys: BatchKeys) -> StepPairs:
        pairs = getattr(keys, "pairs", None)
        return self._pairs(features, keys) if pairs is None else pairs

    def _pairs(self, features: Features, keys: BatchKeys) -> StepPairs:
        """The batch's (event, row) pairs grouped by event, as (row indices, sorted event ids),
        and grouped by row, in CSR form: the forward sum is a sparse segment sum of rows per
        event, and its gradient a sum of event gradients per row (two counting sorts here
        instead of TensorFlow's scatter-add gradient of a gather)."""
        rows, inverse = features.rows, keys.inverse
        sparse = keys.slots.size - self.layout.dense_rows
        by_event = np.empty((2, rows.size), np.int64)
        offsets, by_event[0] = self._group(features.n, rows, inverse, features.offsets)
        by_event[1] = _segments(offsets)
        row_offsets, row_events = self._group(sparse, inverse, rows)
        return StepPairs(by_event, row_offsets, row_events)

    def _step_fn(self, weights, pairs, targets):
        event_rows, event_segments = tf.unstack(pairs)
        labels, importance = tf.unstack(targets)
        n = tf.shape(targets)[1]
        layout = self.layout
        sparse = tf.shape(weights)[0] - layout.dense_rows
        table = weights[:sparse]
        flat = tf.reshape(weights[sparse:], [-1])[:layout.dense_size]
        sums = tf.sparse.segment_sum(table, event_rows, event_segments, num_segments=n)
        with tf.GradientTape() as tape:
            tape.watch([sums, flat])
            logits = logits_tf(layout, sums, split_dense(layout, flat))
            losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            loss = tf.reduce_sum(importance * losses) / tf.cast(n, tf.float32)
        g_sums, g_flat = tape.gradient(loss, [sums, flat])
        return logits, g_sums, g_flat
