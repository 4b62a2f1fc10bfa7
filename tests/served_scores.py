"""The skew check the model-option tests share: the exported SavedModel's scores on the eval split
equal the in-process serving model's."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mmoe.data import split_files
from mmoe.evaluate import collect_predictions
from serving.export import export_saved_model


def assert_served_scores_match(spec, models, workdir, export_dir: str) -> None:
    """Exports ``models.serving`` to ``export_dir``, loads it with ``tf.saved_model.load`` and
    compares its ``serving_default`` scores on ``workdir``'s eval records with the in-process ones."""
    eval_files = split_files(workdir, "eval")
    expected = collect_predictions(spec, models.serving, eval_files)
    export = tf.saved_model.load(export_saved_model(spec, models.serving, export_dir))
    records = [r.numpy() for r in tf.data.TFRecordDataset(eval_files, compression_type="GZIP")]
    served = export.signatures["serving_default"](examples=tf.constant(records))
    np.testing.assert_allclose(served["score"].numpy().ravel(), expected["score"].ravel(), rtol=1e-4, atol=1e-6)
