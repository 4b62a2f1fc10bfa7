"""PCGrad (Yu et al., NeurIPS 2020): project away the parts of task gradients that conflict.

Each task's gradient ``g_i`` is a list over the trained variables (a ``tf.Tensor``, an embedding
table's ``tf.IndexedSlices``, or None where the task's loss does not reach the variable). Where
``g_i . g_j < 0`` for another task ``j``, ``g_i`` loses its component along ``g_j``:
``g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j``, against the other tasks' original gradients in the
spec's task order (the paper shuffles the order each step; with two tasks it does not matter).
The projected gradients are summed. Dot products run over all variables at once, so a tower only
one task reaches adds nothing to them.

``IndexedSlices`` stay sparse in the result (projections concatenate slices, so the optimizer's
lazy update still touches only looked-up rows); for the dot products each is scattered into a
dense buffer of its table's size, a cost per step and task of the table's size.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

Gradient = tf.Tensor | tf.IndexedSlices | None


def _dense(gradient: Gradient, variable) -> tf.Tensor:
    if gradient is None:
        return tf.zeros(variable.shape, variable.dtype)
    if isinstance(gradient, tf.IndexedSlices):
        return tf.math.unsorted_segment_sum(gradient.values, gradient.indices, variable.shape[0])
    return gradient


def _dot(a: Sequence[Gradient], b: Sequence[Gradient], variables) -> tf.Tensor:
    """``sum over variables of <a_v, b_v>``; None counts as zero."""
    terms = [tf.reduce_sum(_dense(x, v) * _dense(y, v)) for x, y, v in zip(a, b, variables)
             if x is not None and y is not None]
    return tf.add_n(terms) if terms else tf.constant(0.0)


def add_gradients(a: Gradient, b: Gradient, scale_b=1.0) -> Gradient:
    """``a + scale_b * b``, sparse when both are (or one is and the other None)."""
    if b is None:
        return a
    if isinstance(b, tf.IndexedSlices):
        scaled = tf.IndexedSlices(b.values * scale_b, b.indices, b.dense_shape)
        if a is None:
            return scaled
        if isinstance(a, tf.IndexedSlices):
            return tf.IndexedSlices(tf.concat([a.values, scaled.values], 0), tf.concat([a.indices, scaled.indices], 0),
                                    a.dense_shape)
        return a + tf.convert_to_tensor(scaled)
    if a is None:
        return b * scale_b
    return tf.convert_to_tensor(a) + b * scale_b


def project_conflicting(task_gradients: Sequence[Sequence[Gradient]], variables) -> list[Gradient]:
    """PCGrad's combined gradient.

    Args:
        task_gradients: ``T`` lists, one per task, each with one gradient per variable of
            ``variables`` (the tape's gradient of that task's weighted loss).
        variables: the variables, for the shapes of sparse and missing gradients.

    Returns:
        One gradient per variable: the sum over tasks of each task's projected gradient (None
        where no task reaches the variable).
    """
    norms = [_dot(g, g, variables) for g in task_gradients]
    combined: list[Gradient] = [None] * len(variables)
    for i, own in enumerate(task_gradients):
        projected = list(own)
        for j, other in enumerate(task_gradients):
            if j == i:
                continue
            dot = _dot(projected, other, variables)
            scale = tf.where(dot < 0.0, -dot / tf.maximum(norms[j], 1e-20), 0.0)
            projected = [add_gradients(p, o, scale) for p, o in zip(projected, other)]
        combined = [add_gradients(c, p) for c, p in zip(combined, projected)]
    return combined
