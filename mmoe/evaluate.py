"""Evaluation of the serving model over the whole eval split: per-task and ranking metrics."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec import FeatureSpec
from mmoe.data import raw_batches, split_files
from mmoe.metrics import (
    binary_metrics,
    calibration,
    gate_statistics,
    grouped_auc,
    keras_rs_ranking_metrics,
    ndcg_at_k,
    regression_metrics,
)
from mmoe.model import GATE_WEIGHTS
from mmoe.score import SCORE, conditional_output_name, output_name, served_outputs


def collect_predictions(spec: FeatureSpec, serving_model, files: list[str], batch_size: int = 4096) -> dict:
    """Runs the serving model over ``files`` and gathers columns, predictions and gate weights.

    Returns:
        NumPy arrays of length n: every training column by name, each served output by name
        (``click_probability``, ``engagement``, ...), ``score``; and ``gate_weights`` ``(n, T, E)``.
    """
    feature_names = [f.name for f in spec.model_features]
    # A plain compiled call rather than predict_on_batch, which would run under the strategy the
    # model was built in (collectives with workers that may have finished already).
    # reduce_retracing: the last, shorter batch reuses the trace (one trace, not one per shape).
    predict = tf.function(lambda features: serving_model(features, training=False), reduce_retracing=True)
    parts: dict[str, list] = {}
    for batch in raw_batches(files, spec, batch_size):
        outputs = {k: v.numpy() for k, v in predict({name: batch[name] for name in feature_names}).items()}
        predictions = served_outputs(spec, outputs)
        columns = {name: value.numpy() if spec.column(name).is_list else value.numpy()[:, 0]  # a list: (n, max_length)
                   for name, value in batch.items()}
        for name, value in {**columns, **predictions}.items():
            parts.setdefault(name, []).append(np.asarray(value))
    if not parts:
        raise ValueError(f"no examples in {files}")
    return {name: np.concatenate(values) for name, values in parts.items()}


def at_serving_values(spec: FeatureSpec, collected: dict) -> np.ndarray | None:
    """Rows whose bias features all hold their serving values (e.g. shown at position 1): where a
    served click probability, which means "if shown there", can be compared with observed clicks.
    None when the spec has no bias features."""
    if not spec.bias_features:
        return None
    rows = np.ones(len(next(iter(collected.values()))), dtype=bool)
    for feature in spec.bias_features:
        values = collected[feature.name]
        if values.dtype.kind in "SO":
            values = np.char.decode(values.astype(bytes), "utf-8")
            rows &= values == str(feature.serving_value)
        else:
            rows &= values == np.asarray(feature.serving_value, dtype=values.dtype)
    return rows


def compute_metrics(spec: FeatureSpec, collected: dict, ndcg_k: int = 10) -> dict:
    """Per-task metrics (in original units), ranking metrics by request and gate statistics.

    A binary task also gets its per-user AUC (``gauc``, :func:`mmoe.metrics.grouped_auc`) when
    the spec names ``ranking.user_key``; a funnel task (``after``) gets ``given_<after>``: the
    metrics of its conditional probability on the rows where the earlier task's label is 1
    (e.g. CVR AUC on clicked rows), beside its own over every impression (CTCVR AUC).
    """
    metrics: dict = {}
    serving_rows = at_serving_values(spec, collected)
    users = collected[spec.ranking.user_key] if spec.ranking.user_key else None
    for task in spec.tasks:
        labels = collected[task.label].astype(np.float64)
        predictions = collected[output_name(task)]
        observed = collected[task.mask] > 0 if task.mask else np.ones(labels.shape, dtype=bool)
        if task.kind == "binary":
            metrics[task.name] = binary_metrics(labels[observed], predictions[observed])
            if users is not None:
                metrics[task.name].update(grouped_auc(users[observed], labels[observed], predictions[observed]))
            if serving_rows is not None:
                # served probabilities mean "if shown at the serving values": calibrate them there
                rows = observed & serving_rows
                metrics[task.name]["at_serving_values"] = calibration(labels[rows], predictions[rows])
            if task.after is not None:
                earlier = collected[spec.task(task.after).label] > 0
                conditional = collected[conditional_output_name(task)]
                metrics[task.name][f"given_{task.after}"] = binary_metrics(labels[earlier], conditional[earlier])
        else:
            metrics[task.name] = regression_metrics(labels[observed], predictions[observed], task.unit)
    if spec.ranking.group_by:
        binary_tasks = [t for t in spec.tasks if t.kind == "binary"]
        relevance_task = binary_tasks[0] if binary_tasks else spec.tasks[0]
        groups = collected[spec.ranking.group_by]
        relevance = collected[relevance_task.label]
        metrics["ranking"] = {
            "relevance": relevance_task.label,
            **ndcg_at_k(groups, collected[SCORE], relevance, k=ndcg_k),
            **keras_rs_ranking_metrics(groups, collected[SCORE], relevance, k=ndcg_k),
        }
    if GATE_WEIGHTS in collected:
        metrics["gates"] = gate_statistics(collected[GATE_WEIGHTS], spec.task_names)
    return metrics


def evaluate(spec: FeatureSpec, workdir: Workdir, serving_model, split: str = "eval") -> dict:
    """Metrics of ``serving_model`` over every example of ``split``."""
    collected = collect_predictions(spec, serving_model, split_files(workdir, split))
    return compute_metrics(spec, collected)
