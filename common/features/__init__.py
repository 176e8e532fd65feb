"""Featurization: events -> 64-bit feature ids, the same code in workers and serving replicas.

Why one package shared by both: a model is trained on the ids a worker makes and served from
the ids a replica makes, so both must come from one path. Event dicts become a columnar
`Batch` (`events`), and `Featurizer.featurize` (`featurizer`) turns any `Batch` into `Features`
for a `FeatureSpec` (`spec`), hashing, bucketizing and crossing (`crosses`) whole columns with
numpy, never looping over events.

Modules: `batch` (Column, Batch, Features, concat_batches), `entries` (a batch's values event
by event, as a line-by-line reader has them), `events` (flatten, columnarize),
`spec` (Transform, FeatureSpec), `crosses` (cross_ids), `featurizer` (Featurizer, BIAS_ID).
"""
from common.features.batch import CATEGORICAL, NUMERIC, Batch, Column, Features, concat_batches
from common.features.crosses import CROSS_TAG, cross_ids
from common.features.events import Flat, columnarize, flatten
from common.features.featurizer import BIAS_ID, Featurizer
from common.features.spec import FeatureSpec, Transform

__all__ = ["BIAS_ID", "CATEGORICAL", "CROSS_TAG", "NUMERIC", "Batch", "Column", "FeatureSpec",
           "Featurizer", "Features", "Flat", "Transform", "columnarize", "concat_batches",
           "cross_ids", "flatten"]
