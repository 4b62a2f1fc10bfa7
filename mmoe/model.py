"""Model builder: spec + artifacts -> the MMoE ranking model, for training and for serving.

Two Keras functional models share every layer:

* ``train``: inputs are the model features and the bias features (e.g. position); outputs map
  each task to ``(batch, 1)``: the logit for binary tasks (the bias tower's logit added) and the
  prediction in the label's transformed space for regression tasks.
* ``serving``: inputs are the model features only; the bias features are fixed to their spec
  ``serving_value`` (e.g. position 1), so binary outputs are the probabilities "if shown there"
  and ranking never depends on the logged position; regression outputs as in training, plus
  ``gate_weights`` ``(batch, tasks, experts)`` for gated architectures.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec import FeatureSpec
from feature_specs.tensors import KERAS_DTYPES, keras_inputs
from mmoe.architectures import build_backbone
from mmoe.encoder import encode_features, load_statistics
from mmoe.layers import MLP, FixedValue

GATE_WEIGHTS = "gate_weights"


@dataclass
class RankingModels:
    """The training model and the serving model; they share all weights."""

    train: keras.Model
    serving: keras.Model


def build_models(spec: FeatureSpec, workdir: Workdir, statistics: Statistics | None = None) -> RankingModels:
    """Builds the ranking models (``spec.model.architecture``) from ``spec`` and the artifacts.

    Args:
        spec: FeatureSpec. Features, tasks and the ``model`` section.
        workdir: Workdir. Where ``artifacts/`` (vocabularies, statistics) were written.
        statistics: optional pre-loaded statistics; read from ``workdir`` when omitted.
    """
    statistics = statistics or load_statistics(workdir)
    config = spec.model
    inputs = keras_inputs(spec.model_features)
    bias_inputs = keras_inputs(spec.bias_features)

    mixtures, gate_weights = build_backbone(
        spec, lambda prefix: encode_features(spec.model_features, inputs, workdir, statistics, "features", prefix)
    )

    bias_logit = serving_bias_logit = None
    if spec.bias_features and any(t.kind == "binary" for t in spec.tasks):
        encoded_bias = encode_features(spec.bias_features, bias_inputs, workdir, statistics, name="bias_features")
        logit = MLP(list(config.bias_tower_units) + [1], output_activation=None, name="bias_tower")(encoded_bias)
        bias_model = keras.Model(bias_inputs, logit, name="bias")
        bias_logit = bias_model(bias_inputs)
        reference = next(iter(inputs.values()))
        fixed = {
            f.name: FixedValue(f.serving_value, KERAS_DTYPES[f.dtype], name=f"{f.name}_at_serving")(reference)
            for f in spec.bias_features
        }
        serving_bias_logit = bias_model(fixed)

    train_outputs, serving_outputs = {}, {}
    for task in spec.tasks:
        head = MLP(
            list(config.tower_units) + [1], output_activation=None, dropout=config.dropout, name=f"tower_{task.name}"
        )(mixtures[task.name])
        if task.kind == "binary":
            train_outputs[task.name] = (
                keras.layers.Add(name=f"{task.name}_logit_with_bias")([head, bias_logit])
                if bias_logit is not None
                else head
            )
            serving_logit = (
                keras.layers.Add(name=f"{task.name}_logit_at_serving")([head, serving_bias_logit])
                if serving_bias_logit is not None
                else head
            )
            serving_outputs[task.name] = keras.layers.Activation("sigmoid", name=f"{task.name}_probability")(serving_logit)
        else:
            train_outputs[task.name] = head
            serving_outputs[task.name] = head
    if gate_weights is not None:
        serving_outputs[GATE_WEIGHTS] = gate_weights

    train_model = keras.Model({**inputs, **bias_inputs}, train_outputs, name=f"{spec.name}_train")
    serving_model = keras.Model(inputs, serving_outputs, name=f"{spec.name}_serving")
    return RankingModels(train=train_model, serving=serving_model)


def task_losses(spec: FeatureSpec) -> tuple[dict, dict]:
    """Keras losses and loss weights per task, as ``compile`` takes them."""
    losses = {}
    for task in spec.tasks:
        if task.loss == "binary_crossentropy":
            losses[task.name] = keras.losses.BinaryCrossentropy(from_logits=True)
        elif task.loss == "huber":
            losses[task.name] = keras.losses.Huber()
        else:
            losses[task.name] = keras.losses.MeanSquaredError()
    return losses, {task.name: task.weight for task in spec.tasks}
