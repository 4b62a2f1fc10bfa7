"""The served outputs: per-task predictions in original units, the spec's ranking score, gates.

One implementation, used both inside the exported SavedModel and by evaluation, so the score a
server returns is the score the offline metrics were computed with. Written with ``keras.ops``:
it runs on symbolic TensorFlow tensors and on NumPy arrays alike.

Output names: ``output_name(task)`` per task (``click_probability``, ``engagement``, ...),
``conditional_output_name(task)`` per funnel task (``conversion_given_click_probability``),
:data:`SCORE`, and ``mmoe.model.GATE_WEIGHTS`` for gated architectures.
"""

from __future__ import annotations

from typing import Mapping

from keras import ops

from feature_specs.spec import FeatureSpec, Task
from mmoe.losses import task_loss
from mmoe.model import GATE_WEIGHTS, conditional_key

SCORE = "score"


def output_name(task: Task) -> str:
    """Name of a task's served output: ``<task>_probability`` for binary, ``<task>`` otherwise."""
    return task.served_output


def conditional_output_name(task: Task) -> str:
    """Name of a funnel task's served conditional probability, e.g. ``conversion_given_click_probability``."""
    return f"{conditional_key(task)}_probability"


def prediction_names(spec: FeatureSpec) -> list[str]:
    """The per-row predictions every caller gets: each task's ``output_name`` (and, for a funnel
    task, its ``conditional_output_name``), then ``score``."""
    names = []
    for task in spec.tasks:
        names.append(output_name(task))
        if task.after is not None:
            names.append(conditional_output_name(task))
    return names + [SCORE]


def task_predictions(spec: FeatureSpec, model_outputs: Mapping) -> dict:
    """Converts the serving model's per-task outputs to served predictions.

    Args:
        model_outputs: task name -> ``(batch, units)``: probability (binary) or the loss's outputs
            (regression: the prediction in the label's transformed space, or the outputs a
            mean loss turns into the mean, :attr:`mmoe.losses.TaskLoss.mean`); and for a
            funnel task, ``<task>_given_<after>`` ``(batch, 1)``, its conditional probability.

    Returns:
        ``output_name(task)`` -> ``(batch,)`` float32: probabilities, or regression predictions in
        the label's original units (``expm1`` undone for ``log1p`` labels, never below 0 there);
        and ``conditional_output_name(task)`` -> ``(batch,)`` per funnel task.
    """
    predictions = {}
    for task in spec.tasks:
        value = ops.cast(model_outputs[task.name], "float32")
        if task.kind == "regression":
            value = task_loss(task.loss).mean(value)
            if task.label_transform == "log1p":
                value = ops.expm1(ops.maximum(value, 0.0))
        predictions[output_name(task)] = ops.reshape(value, (-1,))
        if task.after is not None:
            conditional = ops.cast(model_outputs[conditional_key(task)], "float32")
            predictions[conditional_output_name(task)] = ops.reshape(conditional, (-1,))
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
