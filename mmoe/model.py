"""Model builder: spec + artifacts -> the MMoE ranking model, for training and for serving.

Two Keras functional models share every layer:

* ``train``: inputs are the model features and the bias features (e.g. position); outputs map
  each task to ``(batch, 1)``: the logit for binary tasks (the bias tower's logit added) and the
  prediction in the label's transformed space for regression tasks.
* ``serving``: inputs are the model features only; the bias features are fixed to their spec
  ``serving_value`` (e.g. position 1), so binary outputs are the probabilities "if shown there"
  and ranking never depends on the logged position; regression outputs as in training, plus
  ``gate_weights`` ``(batch, tasks, experts)`` for gated architectures.

A regression task's output is ``(batch, units)``, ``units`` from its loss (three for ``ziln``).
A funnel task (``after: click`` with ``head: esmm|aitm``) predicts the joint probability (click
and conversion) in both models, and the serving model adds ``<task>_given_<after>``
(:func:`conditional_key`), the conditional probability (conversion given click):

* ``esmm``: the task's tower gives the conditional logit ``b``; the joint logit is
  ``logit(sigmoid(a) sigmoid(b))`` with ``a`` the earlier task's logit (bias included in
  training), so both tasks' losses run over every impression (Ma et al., SIGIR 2018).
* ``aitm``: the task's tower reads :class:`~mmoe.layers.attention_transfer.AttentionTransfer` of
  the earlier task's representation and its own, and predicts the joint probability directly;
  the conditional is their ratio (Xi et al., KDD 2021). The calibration loss is in
  :func:`mmoe.losses.task_loss_sums`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import tensorflow as tf

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec import FeatureSpec, ModelConfig, Task
from feature_specs.tensors import KERAS_DTYPES, keras_inputs
from mmoe.architectures import build_backbone
from mmoe.encoder import (
    embed_features,
    load_statistics,
    preprocess_features,
    preprocessed_dtype,
    preprocessed_inputs,
)
from mmoe.layers import MLP, FixedValue
from mmoe.layers.attention_transfer import AttentionTransfer
from mmoe.layers.funnel import ConditionalProbability, FunnelLogit
from mmoe.losses import task_loss

GATE_WEIGHTS = "gate_weights"
PRIOR_CLIP = 1e-4  # positive rates are clipped to [PRIOR_CLIP, 1 - PRIOR_CLIP] before the logit


@dataclass
class RankingModels:
    """The ranking models. All share their weights.

    Attributes:
        train: raw model and bias features -> training outputs (``preprocess`` then ``core``).
        serving: raw model features -> serving outputs.
        preprocess: raw model and bias features -> preprocessed ``(batch, 1)`` tensors (int64
            indices or float32 normalized values); no trainable weights. Training maps it over
            the tf.data pipeline.
        core: preprocessed features -> training outputs; every trainable weight lives here.
    """

    train: keras.Model
    serving: keras.Model
    preprocess: keras.Model
    core: keras.Model


def _fixed_bias_inputs(spec: FeatureSpec, bias_preprocess: keras.Model, reference) -> dict:
    """The bias features' serving values, preprocessed once, as batch-sized constant tensors."""
    raw = {f.name: tf.constant([[f.serving_value]], dtype=KERAS_DTYPES[f.dtype]) for f in spec.bias_features}
    values = bias_preprocess(raw)
    return {
        f.name: FixedValue(
            values[f.name].numpy().item(), preprocessed_dtype(f), name=f"{f.name}_at_serving"
        )(reference)
        for f in spec.bias_features
    }


def conditional_key(task: Task) -> str:
    """The serving model's key of a funnel task's conditional probability: ``<task>_given_<after>``."""
    return f"{task.name}_given_{task.after}"


def _logit(rate: float) -> float:
    rate = min(max(rate, PRIOR_CLIP), 1.0 - PRIOR_CLIP)
    return math.log(rate / (1.0 - rate))


def initial_output_bias(task: Task, statistics: Statistics) -> list[float]:
    """Where a task's output starts, one value per output unit: the logit of its positive rate
    (binary; for an ``esmm`` head, of its rate given the earlier task's) or the biases whose
    prediction is its mean label (regression: :attr:`mmoe.losses.TaskLoss.initial_bias`), from
    the train split's statistics; 0 when they have no label mean.

    A binary head started at logit 0 predicts 0.5 for a task with a few percent positives; its
    first steps then push every tower unit down, which can leave the tower's ReLUs dead (seen on
    census income with one seed: test AUC 0.84 instead of 0.94).
    """
    mean = statistics.label_means.get(task.name)
    if mean is None:
        return [0.0] * task_loss(task.loss).output_units
    if task.kind == "binary":
        after = statistics.label_means.get(task.after) if task.head == "esmm" else None
        return [_logit(mean / after if after else mean)]
    return task_loss(task.loss).initial_bias(float(mean))


def _task_heads(spec: FeatureSpec, mixtures: dict, bias_logit, serving_bias_logit,
                statistics: Statistics) -> tuple[dict, dict]:
    train_outputs, serving_outputs = {}, {}
    logits: dict[str, tuple] = {}  # binary task -> (training logit, serving logit)
    representations: dict[str, object] = {}  # task -> its tower's input
    config = spec.model
    for task in spec.tasks:
        representation = mixtures[task.name]
        if task.head == "aitm":
            representation = AttentionTransfer(name=f"transfer_{task.after}_to_{task.name}")(
                [representations[task.after], representation])
        representations[task.name] = representation
        units = task_loss(task.loss).output_units
        tower = MLP(
            list(config.tower_units) + [units], output_activation=None, dropout=config.dropout, name=f"tower_{task.name}"
        )
        head = tower(representation)
        tower.dense_layers[-1].bias.assign(initial_output_bias(task, statistics))
        if task.kind != "binary":
            train_outputs[task.name] = serving_outputs[task.name] = head
            continue
        if task.head == "esmm":
            joint = FunnelLogit(name=f"{task.name}_joint_logit")
            before_train, before_serving = logits[task.after]
            train_logit, serving_logit = joint([before_train, head]), joint([before_serving, head])
            serving_outputs[conditional_key(task)] = keras.layers.Activation(
                "sigmoid", name=f"{conditional_key(task)}_probability")(head)
        else:
            train_logit = (
                keras.layers.Add(name=f"{task.name}_logit_with_bias")([head, bias_logit]) if bias_logit is not None else head
            )
            serving_logit = (
                keras.layers.Add(name=f"{task.name}_logit_at_serving")([head, serving_bias_logit])
                if serving_bias_logit is not None
                else head
            )
        logits[task.name] = (train_logit, serving_logit)
        train_outputs[task.name] = train_logit
        serving_outputs[task.name] = keras.layers.Activation("sigmoid", name=f"{task.name}_probability")(serving_logit)
        if task.head == "aitm":
            serving_outputs[conditional_key(task)] = ConditionalProbability(name=f"{conditional_key(task)}_probability")(
                [serving_outputs[task.name], serving_outputs[task.after]])
    return train_outputs, serving_outputs


def crossed(x, config: ModelConfig, prefix: str = ""):
    """``config.cross_layers`` DCN-v2 cross layers on ``x`` ``(batch, width)`` -> ``(batch, width)``.

    Stacked (Wang et al., WWW 2021): ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` with
    ``keras_rs.layers.FeatureCross``, named ``<prefix>cross_<l>``; ``x`` unchanged when there are none.
    """
    if not config.cross_layers:
        return x
    from keras_rs.layers import FeatureCross

    first = x
    for level in range(config.cross_layers):
        x = FeatureCross(projection_dim=config.cross_projection_dim or None, name=f"{prefix}cross_{level}")(first, x)
    return x


def build_models(spec: FeatureSpec, workdir: Workdir, statistics: Statistics | None = None) -> RankingModels:
    """Builds the ranking models (``spec.model.architecture``) from ``spec`` and the artifacts.

    Args:
        spec: FeatureSpec. Features, tasks and the ``model`` section.
        workdir: Workdir. Where ``artifacts/`` (vocabularies, statistics) were written.
        statistics: optional pre-loaded statistics; read from ``workdir`` when omitted.
    """
    statistics = statistics or load_statistics(workdir)
    features, bias_features = spec.model_features, spec.bias_features
    raw, raw_bias = keras_inputs(features), keras_inputs(bias_features)
    preprocessed = preprocess_features(features, raw, workdir, statistics)
    preprocessed_bias = preprocess_features(bias_features, raw_bias, workdir, statistics)
    preprocess = keras.Model({**raw, **raw_bias}, {**preprocessed, **preprocessed_bias}, name="preprocess")
    feature_preprocess = keras.Model(raw, preprocessed, name="preprocess_features")

    inputs, bias_inputs = preprocessed_inputs(features), preprocessed_inputs(bias_features)
    mixtures, gate_weights = build_backbone(
        spec, lambda prefix: crossed(embed_features(features, inputs, statistics, "features", prefix,
                                                    spec.model.embedding_l2, spec.model.embedding_l2_per),
                                     spec.model, prefix)
    )
    bias_logit = serving_bias_logit = None
    if bias_features and any(t.kind == "binary" for t in spec.tasks):
        embedded_bias = embed_features(bias_features, bias_inputs, statistics, name="bias_features",
                                       rows_l2=spec.model.embedding_l2, rows_l2_per=spec.model.embedding_l2_per)
        logit = MLP(list(spec.model.bias_tower_units) + [1], output_activation=None, name="bias_tower")(embedded_bias)
        bias_model = keras.Model(bias_inputs, logit, name="bias")
        bias_logit = bias_model(bias_inputs)
        bias_preprocess = keras.Model(raw_bias, preprocessed_bias, name="preprocess_bias")
        serving_bias_logit = bias_model(_fixed_bias_inputs(spec, bias_preprocess, next(iter(inputs.values()))))
    train_outputs, serving_outputs = _task_heads(spec, mixtures, bias_logit, serving_bias_logit, statistics)
    if gate_weights is not None:
        serving_outputs[GATE_WEIGHTS] = gate_weights

    core = keras.Model({**inputs, **bias_inputs}, train_outputs, name=f"{spec.name}_core")
    core_serving = keras.Model(inputs, serving_outputs, name=f"{spec.name}_core_serving")
    all_raw = {**raw, **raw_bias}
    train = keras.Model(all_raw, core(preprocess(all_raw)), name=f"{spec.name}_train")
    serving = keras.Model(raw, core_serving(feature_preprocess(raw)), name=f"{spec.name}_serving")
    return RankingModels(train=train, serving=serving, preprocess=preprocess, core=core)


def task_losses(spec: FeatureSpec) -> tuple[dict, dict]:
    """Keras losses and loss weights per task, as ``compile`` takes them (:data:`mmoe.losses.LOSS_FUNCTIONS`).

    Raises:
        ValueError: for a task with ``head: aitm``, whose calibration loss joins two tasks'
            outputs, which Keras' per-output losses cannot; :class:`mmoe.loop.Trainer` trains it.
    """
    for task in spec.tasks:
        if task.head == "aitm":
            raise ValueError(f"task {task.name!r} has head: aitm, whose calibration loss needs mmoe.loop.Trainer")
    losses = {task.name: task_loss(task.loss).keras_loss() for task in spec.tasks}
    return losses, {task.name: task.weight for task in spec.tasks}
