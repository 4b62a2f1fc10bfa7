"""Each task's gradient taped on its own, the reference the combined-gradient tests (PCGrad,
GradNorm) check the Trainer's step against."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from mmoe.losses import task_loss_sums, weighted_task_losses


def flat(gradients, variables) -> np.ndarray:
    """Gradients (dense, IndexedSlices or None = zeros) as one vector over ``variables``."""
    return np.concatenate([(np.zeros(v.shape, np.float32) if g is None else tf.convert_to_tensor(g).numpy()).ravel()
                           for g, v in zip(gradients, variables)])


def taped_task_gradients(trainer, features, labels, weights, counts, variables) -> SimpleNamespace:
    """One tape per task of ``trainer``'s spec, on one batch.

    Returns:
        ``gradients``: per task, its weighted loss term's gradient on ``variables`` (None where
        the term does not reach a variable); ``losses``: per task, its loss (float);
        ``task_penalty``: the auxiliary losses as the last task tape saw them; ``penalty`` and
        ``penalty_gradients``: the auxiliary losses taped on their own, and their gradient.
    """
    spec = trainer.spec
    gradients, losses, task_penalty = [], [], None
    for task in spec.task_names:
        with tf.GradientTape() as tape:
            outputs = trainer.models.core(features, training=True)
            sums = task_loss_sums(spec, outputs, labels, weights)
            step_losses = {name: sums[name] / counts[name] for name in sums}
            term = weighted_task_losses(spec, step_losses, {}, 1)[task]
            task_penalty = tf.add_n(trainer.models.core.losses)
        gradients.append(tape.gradient(term, variables))
        losses.append(float(step_losses[task]))
    with tf.GradientTape() as tape:
        trainer.models.core(features, training=True)
        penalty = tf.add_n(trainer.models.core.losses)
    return SimpleNamespace(gradients=gradients, losses=losses, task_penalty=float(task_penalty), penalty=float(penalty),
                           penalty_gradients=tape.gradient(penalty, variables))
