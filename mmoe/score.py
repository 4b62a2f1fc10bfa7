"""Per-task predictions in original units and the spec's ranking score.

One implementation, used both inside the exported SavedModel and by evaluation, so the score a
server returns is the score the offline metrics were computed with. Written with ``keras.ops``:
it runs on symbolic TensorFlow tensors and on NumPy arrays alike.
"""

from __future__ import annotations

from typing import Mapping

from keras import ops

from feature_specs.spec import FeatureSpec, Task

SCORE = "score"


def output_name(task: Task) -> str:
    """Name of a task's served output: ``<task>_probability`` for binary, ``<task>`` otherwise."""
    return f"{task.name}_probability" if task.kind == "binary" else task.name


def task_predictions(spec: FeatureSpec, model_outputs: Mapping) -> dict:
    """Converts the serving model's per-task outputs to served predictions.

    Args:
        model_outputs: task name -> ``(batch, 1)``: probability (binary) or the prediction in the
            label's transformed space (regression).

    Returns:
        ``output_name(task)`` -> ``(batch,)`` float32: probabilities, or regression predictions in
        the label's original units (``expm1`` undone for ``log1p`` labels, never below 0 there).
    """
    predictions = {}
    for task in spec.tasks:
        value = ops.reshape(ops.cast(model_outputs[task.name], "float32"), (-1,))
        if task.kind == "regression" and task.label_transform == "log1p":
            value = ops.expm1(ops.maximum(value, 0.0))
        predictions[output_name(task)] = value
    return predictions


def ranking_score(spec: FeatureSpec, predictions: Mapping) -> object:
    """The spec's ranking score from :func:`task_predictions`' output, shape ``(batch,)``.

    ``product``: ``prod_t prediction_t ** weight_t`` (click probability x engagement seconds is
    the expected engagement of an impression). ``weighted_sum``: ``sum_t weight_t * prediction_t``.
    """
    by_task = {task.name: predictions[output_name(task)] for task in spec.tasks}
    score = None
    for task_name, weight in spec.ranking.weights.items():
        value = by_task[task_name]
        if spec.ranking.kind == "product":
            term = ops.power(ops.maximum(value, 0.0), weight)
            score = term if score is None else score * term
        else:
            term = weight * value
            score = term if score is None else score + term
    return score
