"""PCGrad (Yu et al., NeurIPS 2020): project away the parts of task gradients that conflict.

Each task's gradient ``g_i`` is a list over the trained variables (a ``tf.Tensor``, an embedding
table's ``tf.IndexedSlices``, or None where the task's loss does not reach the variable). Where
``g_i . g_j < 0`` for another task ``j``, ``g_i`` loses its component along ``g_j``:
``g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j``, against the other tasks' original gradients in the
spec's task order (the paper shuffles the order each step; with two tasks it does not matter).
The projected gradients are summed. Dot products run over all variables at once, so a tower only
one task reaches adds nothing to them.

``IndexedSlices`` stay sparse in the result (the combined gradient concatenates the tasks' slices,
so the optimizer's lazy update still touches only looked-up rows); for the dot products each is
scattered once into a dense buffer of its table's size, a cost per step and task of the table's size.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

Gradient = tf.Tensor | tf.IndexedSlices | None


def densified(gradient: Gradient, variable) -> tf.Tensor | None:
    """``gradient`` as a dense tensor of ``variable``'s shape (IndexedSlices scattered, duplicates
    summed); None stays None."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.math.unsorted_segment_sum(gradient.values, gradient.indices, variable.shape[0])
    return gradient


def _dot(a: Sequence[tf.Tensor | None], b: Sequence[tf.Tensor | None]) -> tf.Tensor:
    """``sum over variables of <a_v, b_v>`` of dense gradients; None counts as zero."""
    terms = [tf.reduce_sum(x * y) for x, y in zip(a, b) if x is not None and y is not None]
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
    # A projected gradient stays a combination of the original ones, so every dot product it
    # takes is one of the originals' Gram matrix (each gradient densified once), and the result is
    # one weighted sum of the originals: T slices per sparse variable, however many projections.
    dense = [[densified(g, v) for g, v in zip(gradients, variables)] for gradients in task_gradients]
    tasks = range(len(task_gradients))
    gram = [[None] * len(tasks) for _ in tasks]
    for i in tasks:
        for j in range(i, len(tasks)):
            gram[i][j] = gram[j][i] = _dot(dense[i], dense[j])
    weights = [tf.constant(1.0)] * len(task_gradients)  # of each original in the combined gradient
    for i in tasks:
        coefficients = [tf.constant(1.0 if k == i else 0.0) for k in tasks]  # task i's projected gradient
        for j in tasks:
            if j == i:
                continue
            dot = tf.add_n([coefficients[k] * gram[k][j] for k in tasks])
            coefficients[j] += tf.where(dot < 0.0, -dot / tf.maximum(gram[j][j], 1e-20), 0.0)
        weights = [w + (c if k != i else 0.0) for k, (w, c) in enumerate(zip(weights, coefficients))]
    combined: list[Gradient] = [None] * len(variables)
    for weight, gradients in zip(weights, task_gradients):
        combined = [add_gradients(c, g, weight) for c, g in zip(combined, gradients)]
    return combined
