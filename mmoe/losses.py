"""The task losses' implementations, in one table: name -> per-example loss and the Keras loss
for ``compile``. Which names a spec may give a task of each kind (and the default) is the spec's
vocabulary, ``feature_specs.spec.LOSSES``, checked when the spec loads; this table implements
exactly those names (a test holds the two equal).

The training loop (:mod:`mmoe.loop`) sums :func:`per_example_loss` over the rows where a task's
label is observed; :func:`mmoe.model.task_losses` gives Keras ``compile`` the same losses as
``keras.losses.Loss`` objects. Binary outputs are logits, so both read them ``from_logits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import tensorflow as tf


@dataclass(frozen=True)
class TaskLoss:
    """One loss a task may name in its spec.

    Attributes:
        name: the spec's name of the loss (``tasks[].loss``).
        per_example: ``(labels, outputs) -> (batch,)``, labels and outputs ``(batch, 1)``
            (outputs are logits for binary tasks).
        keras_loss: makes the ``keras.losses.Loss`` that ``Model.compile`` takes.
    """

    name: str
    per_example: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    keras_loss: Callable[[], keras.losses.Loss]


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
    )
}


def task_loss(name: str) -> TaskLoss:
    """The :data:`LOSS_FUNCTIONS` entry of ``name``; raises ValueError for a loss it lacks."""
    try:
        return LOSS_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSS_FUNCTIONS)}") from None


def per_example_loss(name: str, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Per-example loss ``(batch,)`` of ``(batch, 1)`` labels and outputs (logits for binary)."""
    return task_loss(name).per_example(labels, outputs)


def task_loss_sums(spec, outputs: dict, labels: dict, weights: dict) -> dict[str, tf.Tensor]:
    """Per task, the sum over the batch of its per-example loss times its sample weight.

    Args:
        spec: FeatureSpec (its ``tasks``).
        outputs, labels: task -> ``(batch, 1)``; weights: task -> ``(batch,)`` (the task's mask).

    Returns:
        task -> scalar.
    """
    return {
        task.name: tf.reduce_sum(per_example_loss(task.loss, labels[task.name], outputs[task.name]) * weights[task.name])
        for task in spec.tasks
    }


def combine_task_losses(spec, task_losses: dict, log_variances: dict, num_replicas: int) -> tf.Tensor:
    """Weighted total of one replica's task losses (each already divided by the global count).

    Args:
        spec: FeatureSpec (each task's ``weight`` and ``kind``).
        task_losses: task -> scalar.
        log_variances: task -> the learned log-variance ``s`` under uncertainty weighting
            (Kendall et al. 2018), else empty: fixed weights.
        num_replicas: replicas whose totals are summed (the ``s / 2`` term is split among them).
    """
    total = tf.constant(0.0)
    for task in spec.tasks:
        loss = task_losses[task.name]
        if log_variances:
            # Kendall et al.: exp(-s) L + s/2 for classification, exp(-s) L / 2 + s/2 for regression.
            s = log_variances[task.name].value
            scale = 1.0 if task.kind == "binary" else 0.5
            loss = scale * tf.exp(-s) * loss + 0.5 * s / num_replicas
        total += task.weight * loss
    return total
