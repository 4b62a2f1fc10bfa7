"""TF Serving warmup requests: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving (and :mod:`serving.models`) replays the records of this file when it loads a version,
so the first real request does not pay for graph warmup. The file is a TFRecord of
``tensorflow.serving.PredictionLog`` protos, each holding a ``PredictRequest`` for the
``serving_default`` signature whose ``examples`` input is a batch of serialized tf.Examples.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from serving.contract import DEFAULT_SIGNATURE, EXAMPLES_INPUT, assets_extra, warmup_path


def predict_log(examples: Sequence[bytes], model_name: str) -> prediction_log_pb2.PredictionLog:
    """A ``PredictionLog`` whose request scores ``examples`` with ``serving_default``.

    Args:
        examples: serialized tf.Examples of raw features.
        model_name: the served model's name (the ``<name>`` of ``<base>/<name>/<version>``).
    """
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=DEFAULT_SIGNATURE)
    )
    request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(list(examples), dtype=tf.string))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_requests(export_dir: str, examples: list[bytes], model_name: str) -> str:
    """Writes TF Serving's warmup file for the SavedModel in ``export_dir`` and returns its path.

    Two records: the whole batch of ``examples``, then the first example alone (so both a batched
    and a single-row call are warmed).

    Args:
        export_dir: a SavedModel version directory (may still be the temporary export directory).
        examples: a few serialized tf.Examples of raw features, as in the training files.
        model_name: the served model's name.

    Raises:
        ValueError: if ``examples`` is empty or holds something other than bytes.
    """
    if not examples:
        raise ValueError("warmup needs at least one serialized tf.Example, got none")
    bad = [type(e).__name__ for e in examples if not isinstance(e, bytes)]
    if bad:
        raise ValueError(f"warmup examples must be serialized tf.Examples (bytes), got {bad[0]}")
    path = warmup_path(export_dir)
    tf.io.gfile.makedirs(assets_extra(export_dir))
    with tf.io.TFRecordWriter(path) as writer:
        for batch in (examples, examples[:1]):
            writer.write(predict_log(batch, model_name).SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> Iterator[predict_pb2.PredictRequest]:
    """The ``PredictRequest``s of a version's warmup file; nothing if it has none."""
    path = warmup_path(export_dir)
    if not tf.io.gfile.exists(path):
        return
    for record in tf.data.TFRecordDataset([path]):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") == "predict_log":
            yield log.predict_log.request
