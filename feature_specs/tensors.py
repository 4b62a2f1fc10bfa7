"""The one place a spec becomes TensorFlow parse specs and Keras inputs.

Raw columns travel as tf.Example features of shape ``[1]`` per example: strings as bytes,
``int``/``timestamp`` as int64, ``float`` as float32. Columns with ``required: false`` parse with
their default, so a serving request may leave them out.

A list column travels as a variable-length feature (a bytes_list / int64_list of any length,
none included) and is parsed ragged, then made dense: ``[batch, max_length]``, the first
``max_length`` elements of each row followed by :data:`~feature_specs.spec.LIST_PADDING` (``""``
or -1) (:func:`pad_list`). The model's inputs and the ``predict_raw`` signature take lists in
that padded form (``predict_raw`` any width ``[batch, width]``, cut or padded to ``max_length``).
A list feature left out of a serving request is the empty list.
"""

from __future__ import annotations

from typing import Iterable

import keras
import tensorflow as tf

from feature_specs.spec import LIST_PADDING, Column, FeatureSpec

# spec dtype -> the tf.DType its values parse to, are served as and are checked against in requests
TF_DTYPES = {"string": tf.string, "int": tf.int64, "timestamp": tf.int64, "float": tf.float32}
KERAS_DTYPES = {"string": "string", "int": "int64", "timestamp": "int64", "float": "float32"}


def parse_spec(columns: Iterable[Column]) -> dict:
    """``tf.io.parse_example`` features for ``columns``, each parsed to shape ``[batch, 1]``; a
    list column as a ``tf.io.RaggedFeature`` (``[batch, None]`` ragged: use :func:`parse_examples`
    for the padded form)."""
    spec = {}
    for column in columns:
        if column.list is not None:
            spec[column.name] = tf.io.RaggedFeature(TF_DTYPES[column.dtype], row_splits_dtype=tf.int64)
            continue
        default = None
        if not column.required:
            default = column.default.encode() if column.dtype == "string" else column.default
        spec[column.name] = tf.io.FixedLenFeature([1], TF_DTYPES[column.dtype], default_value=default)
    return spec


def pad_list(column: Column, values) -> tf.Tensor:
    """A list column's values as ``[batch, max_length]``: each row's first ``max_length``
    elements, then :data:`~feature_specs.spec.LIST_PADDING`.

    Args:
        column: Column with a ``list`` block.
        values: a ``tf.RaggedTensor`` ``[batch, None]`` or a dense ``[batch, width]`` tensor
            (already padded with the padding element), of the column's dtype.
    """
    pad = LIST_PADDING[column.dtype]
    width = column.list.max_length
    if isinstance(values, tf.RaggedTensor):
        return values.to_tensor(default_value=pad, shape=[None, width])
    values = values[:, :width]
    missing = width - tf.shape(values)[1]
    padded = tf.pad(values, [[0, 0], [0, missing]], constant_values=pad)
    return tf.ensure_shape(padded, [None, width])


def parse_examples(serialized: tf.Tensor, columns: Iterable[Column]) -> dict[str, tf.Tensor]:
    """Parses a batch of serialized tf.Examples: ``[batch, 1]`` per scalar column and
    ``[batch, max_length]`` per list column (:func:`pad_list`)."""
    columns = tuple(columns)
    parsed = tf.io.parse_example(serialized, parse_spec(columns))
    return {c.name: pad_list(c, parsed[c.name]) if c.list is not None else parsed[c.name] for c in columns}


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


def input_width(column: Column) -> int:
    """Values per example in model inputs: 1, or a list column's ``max_length``."""
    return 1 if column.list is None else column.list.max_length


def keras_inputs(columns: Iterable[Column]) -> dict[str, keras.KerasTensor]:
    """One ``keras.Input`` of shape ``(1,)`` per column (``(max_length,)`` for a list), named after it."""
    return {c.name: keras.Input(shape=(input_width(c),), dtype=KERAS_DTYPES[c.dtype], name=c.name) for c in columns}


def raw_tensor_specs(columns: Iterable[Column]) -> dict[str, tf.TensorSpec]:
    """Signature specs for named raw inputs (the ``predict_raw`` signature): ``[None]`` per
    scalar column, ``[None, None]`` per list column (rows padded with
    :data:`~feature_specs.spec.LIST_PADDING` to any common width)."""
    return {c.name: tf.TensorSpec([None] if c.list is None else [None, None], TF_DTYPES[c.dtype], name=c.name)
            for c in columns}


def raw_model_inputs(columns: Iterable[Column], raw: dict) -> dict[str, tf.Tensor]:
    """``predict_raw``'s named tensors as the model takes them: ``[batch, 1]`` per scalar and
    ``[batch, max_length]`` per list column (:func:`pad_list`)."""
    return {c.name: pad_list(c, raw[c.name]) if c.list is not None else tf.reshape(raw[c.name], [-1, 1])
            for c in columns}
