"""The task losses' implementations, in one table: name -> per-example loss, the width of the
task's output, how that output becomes the predicted mean, and where it starts. Which names a spec
may give a task of each kind (and the default) is the spec's vocabulary,
``feature_specs.spec.LOSSES``, checked when the spec loads; this table implements exactly those
names (a test holds the two equal).

The training loop (:mod:`mmoe.loop`) sums :func:`per_example_loss` over the rows where a task's
label is observed; :func:`mmoe.model.task_losses` gives Keras ``compile`` the same losses as
``keras.losses.Loss`` objects. Binary outputs are logits, so both read them ``from_logits``.

Losses whose prediction is the conditional mean of a heavy-tailed, non-negative label
(``feature_specs.spec.MEAN_LOSSES``), learned on the label in its original units:

* ``ziln``: zero-inflated log-normal (Wang, Liu and Miao 2019, "A Deep Probabilistic Model for
  Customer Lifetime Value Prediction"). Three outputs: the logit of ``P(y > 0)``, and the
  log-normal's ``mu`` and ``softplus``-ed ``sigma`` for the positive part. Loss: the binary
  cross-entropy of ``y > 0`` plus, where ``y > 0``, the log-normal's negative log-likelihood.
  Mean: ``p * exp(mu + sigma^2 / 2)``.
* ``tweedie``: the Tweedie deviance's likelihood part with power :data:`TWEEDIE_POWER` and a log
  link, ``-y exp((1-rho) f) / (1-rho) + exp((2-rho) f) / (2-rho)``; mean ``exp(f)``.
* ``poisson``: ``exp(f) - y f``, the Poisson likelihood with a log link; mean ``exp(f)``.

MSE on ``log1p(y)`` (then ``expm1``) predicts the geometric mean instead: for a log-normal label,
``exp(-sigma^2 / 2)`` of the mean (a third of it at sigma 1.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras
import tensorflow as tf
from keras import ops

from mmoe.registry import register

TWEEDIE_POWER = 1.5  # rho in (1, 2): a compound Poisson-gamma, with an atom at zero
ZILN_MIN_SCALE = math.sqrt(keras.config.epsilon())  # sigma's floor, as in the ZILN reference code
ZILN_START_NONZERO = 0.5  # P(y > 0) where a ZILN head starts (its logit 0) ...
ZILN_START_SCALE = 1.0  # ... and sigma; mu is set so that the start predicts the train split's mean
SMALLEST_MEAN = 1e-6  # a label mean below this starts a log-link head at log(SMALLEST_MEAN)


def _first(outputs):
    """``(batch, units)`` -> ``(batch,)``: the first output unit."""
    return outputs[:, 0]


def _ziln_parts(outputs):
    """``(batch, 3)`` ZILN outputs -> (logit of ``P(y > 0)``, mu, sigma), each ``(batch,)``."""
    scale = ops.maximum(ops.softplus(outputs[:, 2]), ZILN_MIN_SCALE)
    return outputs[:, 0], outputs[:, 1], scale


def ziln_loss(labels, outputs):
    """Per-example ZILN loss ``(batch,)`` of ``(batch, 1)`` non-negative labels and ``(batch, 3)`` outputs."""
    y = ops.cast(labels[:, 0], "float32")
    positive = ops.cast(y > 0, "float32")
    logit, mu, scale = _ziln_parts(outputs)
    classification = keras.losses.binary_crossentropy(positive[:, None], logit[:, None], from_logits=True)
    safe = ops.where(y > 0, y, ops.ones_like(y))
    log_safe = ops.log(safe)
    log_prob = -log_safe - ops.log(scale) - 0.5 * math.log(2.0 * math.pi) - ops.square(log_safe - mu) / (2.0 * ops.square(scale))
    return classification - positive * log_prob


def ziln_mean(outputs):
    """``(batch, 3)`` ZILN outputs -> ``(batch,)`` predicted mean ``p * exp(mu + sigma^2 / 2)``."""
    logit, mu, scale = _ziln_parts(outputs)
    return ops.sigmoid(logit) * ops.exp(mu + 0.5 * ops.square(scale))


def ziln_initial_bias(mean: float) -> list[float]:
    """Output biases whose prediction is ``mean``: P(y > 0) and sigma at their start values."""
    mu = math.log(max(mean, SMALLEST_MEAN) / ZILN_START_NONZERO) - 0.5 * ZILN_START_SCALE**2
    logit = math.log(ZILN_START_NONZERO / (1.0 - ZILN_START_NONZERO))
    return [logit, mu, math.log(math.expm1(ZILN_START_SCALE))]  # softplus(x) = sigma


def tweedie_loss(labels, outputs):
    """Per-example Tweedie loss ``(batch,)``: ``(batch, 1)`` labels, ``(batch, 1)`` log-means."""
    y, f = ops.cast(labels[:, 0], "float32"), outputs[:, 0]
    rho = TWEEDIE_POWER
    return -y * ops.exp((1.0 - rho) * f) / (1.0 - rho) + ops.exp((2.0 - rho) * f) / (2.0 - rho)


def poisson_loss(labels, outputs):
    """Per-example Poisson loss ``(batch,)``: ``(batch, 1)`` labels, ``(batch, 1)`` log-means."""
    y, f = ops.cast(labels[:, 0], "float32"), outputs[:, 0]
    return ops.exp(f) - y * f


def _log_mean(mean: float) -> list[float]:
    return [math.log(max(mean, SMALLEST_MEAN))]


@register
class PerExampleLoss(keras.losses.Loss):
    """A :data:`LOSS_FUNCTIONS` entry as a ``keras.losses.Loss`` (for ``Model.compile``).

    Args:
        loss_name: str. The spec's name of the loss, e.g. ``"ziln"``.
    """

    def __init__(self, loss_name: str, **kwargs):
        kwargs.setdefault("name", loss_name)
        super().__init__(**kwargs)
        self.loss_name = loss_name

    def call(self, y_true, y_pred):
        return task_loss(self.loss_name).per_example(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "loss_name": self.loss_name}


@dataclass(frozen=True)
class TaskLoss:
    """One loss a task may name in its spec.

    Attributes:
        name: the spec's name of the loss (``tasks[].loss``).
        per_example: ``(labels, outputs) -> (batch,)``, labels ``(batch, 1)``, outputs
            ``(batch, output_units)`` (logits for binary tasks).
        keras_loss: makes the ``keras.losses.Loss`` that ``Model.compile`` takes.
        output_units: width of the task's output.
        mean: ``(batch, output_units) -> (batch,)``: the prediction in the label's (transformed)
            space; for the mean losses, the conditional mean in original units.
        initial_bias: the train split's mean label (in the loss's label space) -> the output
            biases the head starts from, so that it starts predicting that mean.
    """

    name: str
    per_example: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    keras_loss: Callable[[], keras.losses.Loss]
    output_units: int = 1
    mean: Callable = _first
    initial_bias: Callable[[float], list[float]] = lambda mean: [float(mean)]


LOSS_FUNCTIONS: dict[str, TaskLoss] = {
    loss.name: loss
    for loss in (
        TaskLoss(
            "binary_crossentropy",
            lambda labels, outputs: keras.losses.binary_crossentropy(labels, outputs, from_logits=True),
            lambda: keras.losses.BinaryCrossentropy(from_logits=True),
        ),
        TaskLoss("mse", keras.losses.mean_squared_error, keras.losses.MeanSquaredError),
        TaskLoss("huber", keras.losses.huber, keras.losses.Huber),
        TaskLoss("ziln", ziln_loss, lambda: PerExampleLoss("ziln"), output_units=3, mean=ziln_mean,
                 initial_bias=ziln_initial_bias),
        TaskLoss("tweedie", tweedie_loss, lambda: PerExampleLoss("tweedie"), mean=lambda o: ops.exp(o[:, 0]),
                 initial_bias=_log_mean),
        TaskLoss("poisson", poisson_loss, lambda: PerExampleLoss("poisson"), mean=lambda o: ops.exp(o[:, 0]),
                 initial_bias=_log_mean),
    )
}


def task_loss(name: str) -> TaskLoss:
    """The :data:`LOSS_FUNCTIONS` entry of ``name``; raises ValueError for a loss it lacks."""
    try:
        return LOSS_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSS_FUNCTIONS)}") from None


def per_example_loss(name: str, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Per-example loss ``(batch,)`` of ``(batch, 1)`` labels and ``(batch, units)`` outputs (logits for binary)."""
    return task_loss(name).per_example(labels, outputs)


def calibration_penalty(outputs: tf.Tensor, after_outputs: tf.Tensor) -> tf.Tensor:
    """AITM's calibration loss per example, ``max(p - p_after, 0)`` ``(batch,)``, of two tasks'
    ``(batch, 1)`` logits: a later funnel step is never likelier than the one before it."""
    return tf.nn.relu(tf.sigmoid(outputs[:, 0]) - tf.sigmoid(after_outputs[:, 0]))


def task_loss_sums(spec, outputs: dict, labels: dict, weights: dict) -> dict[str, tf.Tensor]:
    """Per task, the sum over the batch of its per-example loss times its sample weight.

    Args:
        spec: FeatureSpec (its ``tasks``).
        outputs, labels: task -> ``(batch, 1)``; weights: task -> ``(batch,)`` (the task's mask).

    Returns:
        task -> scalar. A task with ``head: aitm`` adds its calibration loss
        (:func:`calibration_penalty` times ``calibration_weight``) to its own.
    """
    sums = {}
    for task in spec.tasks:
        loss = per_example_loss(task.loss, labels[task.name], outputs[task.name])
        if task.head == "aitm":
            loss += task.calibration_weight * calibration_penalty(outputs[task.name], outputs[task.after])
        sums[task.name] = tf.reduce_sum(loss * weights[task.name])
    return sums


def weighted_task_losses(spec, task_losses: dict, log_variances: dict, num_replicas: int) -> dict[str, tf.Tensor]:
    """Each task's term of one replica's total (each task loss already divided by the global count).

    Args:
        spec: FeatureSpec (each task's ``weight`` and ``kind``).
        task_losses: task -> scalar.
        log_variances: task -> the learned log-variance ``s`` under uncertainty weighting
            (Kendall et al. 2018), else empty: fixed weights.
        num_replicas: replicas whose totals are summed (the ``s / 2`` term is split among them).

    Returns:
        task -> scalar: its ``weight`` times its loss (under uncertainty weighting, Kendall et
        al.'s ``exp(-s) L + s/2``, or ``exp(-s) L / 2 + s/2`` for regression).
    """
    terms = {}
    for task in spec.tasks:
        loss = task_losses[task.name]
        if log_variances:
            s = log_variances[task.name].value
            scale = 1.0 if task.kind == "binary" else 0.5
            loss = scale * tf.exp(-s) * loss + 0.5 * s / num_replicas
        terms[task.name] = task.weight * loss
    return terms
