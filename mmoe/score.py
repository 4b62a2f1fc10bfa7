"""The served outputs: per-task predictions in original units, the spec's ranking score, gates.

One implementation, used both inside the exported SavedModel and by evaluation, so the score a
server returns is the score the offline metrics were computed with. Written with ``keras.ops``:
it runs on symbolic TensorFlow tensors and on NumPy arrays alike.

Output names: ``output_name(task)`` per task (``click_probability``, ``engagement``, ...),
:data:`SCORE`, and ``mmoe.model.GATE_WEIGHTS`` for gated architectures.
"""

from __future__ import annotations

from typing import Mapping

from keras import ops

from feature_specs.spec import FeatureSpec, Task
from mmoe.model import GATE_WEIGHTS

SCORE = "score"


def output_name(task: Task) -> str:
    """Name of a task's served output: ``<task>_probability`` for binary, ``<task>`` otherwise."""
    return f"{task.name}_probability" if task.kind == "binary" else task.name


def prediction_names(spec: FeatureSpec) -> list[str]:
    """The per-row predictions every caller gets: each task's ``output_name``, then ``score``."""
    return [output_name(task) for task in spec.tasks] + [SCORE]


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


def served_outputs(spec: FeatureSpec, model_outputs: Mapping, with_gates: bool = True) -> dict:
    """What a served model answers for the serving model's outputs.

    Args:
        spec: the spec the model was trained with (its tasks and ranking score).
        model_outputs: the serving model's outputs: task name -> ``(batch, 1)`` (see
            :func:`task_predictions`), and ``gate_weights`` ``(batch, tasks, experts)`` for gated
            architectures.
        with_gates: whether ``gate_weights`` is passed through (when the model has it).

    Returns:
        ``output_name(task)`` -> ``(batch,)`` per task, ``score`` ``(batch,)``
        (:func:`ranking_score`) and, if asked for and present, ``gate_weights`` unchanged.
    """
    outputs = task_predictions(spec, model_outputs)
    outputs[SCORE] = ranking_score(spec, outputs)
    if with_gates and GATE_WEIGHTS in model_outputs:
        outputs[GATE_WEIGHTS] = model_outputs[GATE_WEIGHTS]
    return outputs
