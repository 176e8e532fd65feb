"""`deltaps export`: a model of a running cluster as a TensorFlow SavedModel for TF Serving.

The weights are read from the shards with the snapshot request replicas bootstrap from (each
shard's slice of the model as it publishes it), so the export holds what a caught-up replica
holds. The serving signature takes instances as pre-hashed feature ids in ragged form, the ids
`common.features.Featurizer` makes for the model (bias id included) and the row splits
(instance i owns ``ids[row_splits[i]:row_splits[i + 1]]``), exactly what a `predict_ids` read
carries, and returns each instance's probability: the replica's math (`common.deep`,
`common.linear`) in TensorFlow. Ids are int64 (uint64 ids reinterpreted: only their low `bits`
bits are read). Featurizing strings inside the graph is left out on purpose: the featurizer's
hash is deltaps' own and must stay the one implementation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.config import ClusterFile, ModelSpec
from common.deep import DeepLayout
from common.errors import DeltapsError
from common.messages import SnapshotRequest
from common.transport import Channel


def fetch_weights(cluster: ClusterFile, model: str, timeout: float = 30.0) -> np.ndarray:
    """The model's published weights, every shard's slice in place: (keys,) for a linear model,
    (keys, h0) for a deep one (`common.deep.DeepLayout`)."""
    spec = cluster.spec.model(model)
    n = cluster.spec.shards
    parts = []
    for node in cluster.shards():
        ch = Channel(node.address, max_bytes=cluster.spec.max_message_bytes)
        try:
            parts.append(ch.request(SnapshotRequest(model), timeout).values)
        finally:
            ch.close()
    keys = DeepLayout.of(spec).total_keys if spec.kind == "deep" else spec.slots
    out = np.zeros((keys, *parts[0].shape[1:]), np.float32)
    for k, values in enumerate(parts):
        if values.shape != out[k::n].shape:
            raise DeltapsError(f"shard {k} sent {list(values.shape)} values of model {model!r}, "
                               f"expected {list(out[k::n].shape)}")
        out[k::n] = values
    return out


def export_saved_model(spec: ModelSpec, weights: np.ndarray, out: str | Path) -> Path:
    """Write the SavedModel of `spec` holding `weights` (as `fetch_weights` returns them)."""
    import tensorflow as tf

    from worker.models.deep import logits_tf, split_dense

    bits_mask = tf.constant((1 << spec.bits) - 1, tf.int64)
    module = tf.Module()
    if spec.kind == "deep":
        layout = DeepLayout.of(spec)
        module.table = tf.Variable(weights[:layout.slots], trainable=False, name="sparse")
        module.dense = tf.Variable(layout.dense_of_rows(weights[layout.slots:]),
                                   trainable=False, name="dense")
    else:
        module.table = tf.Variable(weights[:, None], trainable=False, name="weights")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids"),
                                  tf.TensorSpec([None], tf.int64, name="row_splits")])
    def predict(ids, row_splits):
        n = tf.shape(row_splits, out_type=tf.int64)[0] - 1
        segments = tf.ragged.row_splits_to_segment_ids(row_splits, out_type=tf.int64)
        rows = tf.gather(module.table, tf.bitwise.bitwise_and(ids, bits_mask))
        sums = tf.math.unsorted_segment_sum(rows, segments, n)
        if spec.kind == "deep":
            logits = logits_tf(layout, sums, split_dense(layout, module.dense))
        else:
            logits = sums[:, 0]
        return {"probabilities": tf.math.sigmoid(tf.clip_by_value(logits, -35.0, 35.0))}

    module.predict = predict
    out = Path(out)
    tf.saved_model.save(module, str(out), signatures={"serving_default": predict})
    return out
