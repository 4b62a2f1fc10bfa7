"""The one place a spec becomes TensorFlow parse specs and Keras inputs.

Raw columns travel as tf.Example features of shape ``[1]`` per example: strings as bytes,
``int``/``timestamp`` as int64, ``float`` as float32. Columns with ``required: false`` parse with
their default, so a serving request may leave them out.
"""

from __future__ import annotations

from typing import Iterable

import keras
import tensorflow as tf

from feature_specs.spec import Column, FeatureSpec

# spec dtype -> the tf.DType its values parse to, are served as and are checked against in requests
TF_DTYPES = {"string": tf.string, "int": tf.int64, "timestamp": tf.int64, "float": tf.float32}
KERAS_DTYPES = {"string": "string", "int": "int64", "timestamp": "int64", "float": "float32"}


def parse_spec(columns: Iterable[Column]) -> dict[str, tf.io.FixedLenFeature]:
    """``tf.io.parse_example`` features for ``columns``, each parsed to shape ``[batch, 1]``."""
    spec = {}
    for column in columns:
        default = None
        if not column.required:
            default = column.default.encode() if column.dtype == "string" else column.default
        spec[column.name] = tf.io.FixedLenFeature([1], TF_DTYPES[column.dtype], default_value=default)
    return spec


def serving_columns(spec: FeatureSpec) -> tuple[Column, ...]:
    """Columns a served model needs: the model features (bias features are fixed at serving)."""
    return spec.model_features


def training_columns(spec: FeatureSpec) -> tuple[Column, ...]:
    """Columns the training input carries: model and bias features, labels and masks, group id
    and user key (per-user metrics)."""
    names = [f.name for f in spec.features]
    for task in spec.tasks:
        names += [task.label] + ([task.mask] if task.mask else [])
    for key in (spec.ranking.group_by, spec.ranking.user_key):
        if key:
            names.append(key)
    return tuple(spec.column(n) for n in dict.fromkeys(names))


def keras_inputs(columns: Iterable[Column]) -> dict[str, keras.KerasTensor]:
    """One ``keras.Input`` of shape ``(1,)`` per column, named after it."""
    return {c.name: keras.Input(shape=(1,), dtype=KERAS_DTYPES[c.dtype], name=c.name) for c in columns}


def raw_tensor_specs(columns: Iterable[Column]) -> dict[str, tf.TensorSpec]:
    """Signature specs of shape ``[None]`` for named raw inputs (the ``predict_raw`` signature)."""
    return {c.name: tf.TensorSpec([None], TF_DTYPES[c.dtype], name=c.name) for c in columns}
