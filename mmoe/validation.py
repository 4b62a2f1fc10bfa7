"""The eval pass at each epoch's end: per-task loss and a streaming AUC over the eval split.

Each step sums, per task, the masked loss, the observed rows and (binary tasks) histograms of
the predicted probability for positive and negative rows over :data:`AUC_BINS` bins; the sums
over the split give the mean losses and :func:`histogram_auc`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from feature_specs.spec import FeatureSpec
from mmoe.input_pipeline import InputPipeline
from mmoe.losses import task_loss_sums
from mmoe.steps import summed_over_replicas, summed_steps

AUC_BINS = 2000  # histogram bins of the streaming eval AUC (exact to about 1e-3)


def histogram_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC AUC from weighted score histograms over equal-width bins of [0, 1] (ties count 1/2).

    Args:
        positives, negatives: ``(bins,)`` weights of the positive / negative rows per score bin.
    """
    positives, negatives = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    total_pos, total_neg = positives.sum(), negatives.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    above = np.cumsum(positives[::-1])[::-1] - positives  # positives scored in higher bins
    return float((negatives * (above + 0.5 * positives)).sum() / (total_pos * total_neg))


class Validation:
    """Eval-split metrics of a model, ``steps_per_execution`` batches per compiled call.

    Args:
        spec: FeatureSpec. Its tasks (``kind``, ``loss``, ``weight``).
        core: the core model, preprocessed features -> task -> ``(batch, 1)`` outputs (logits
            for binary tasks).
        pipeline: InputPipeline giving the eval split's distributed batches.
        strategy: the ``tf.distribute`` strategy the steps run under.
        steps_per_execution: batches per call of the compiled loop (1: one call per batch).
    """

    def __init__(self, spec: FeatureSpec, core, pipeline: InputPipeline, strategy: tf.distribute.Strategy,
                 steps_per_execution: int):
        self.spec, self.core, self.pipeline, self.strategy = spec, core, pipeline, strategy
        self.steps_per_execution = steps_per_execution
        self._step_fn = tf.function(self._distributed_step)
        self._steps_fn = tf.function(self._distributed_steps)

    def _replica_step(self, features, labels, weights):
        outputs = self.core(features, training=False)
        sums = task_loss_sums(self.spec, outputs, labels, weights)
        result = {}
        for task in self.spec.tasks:
            result[f"{task.name}_loss_sum"] = sums[task.name]
            result[f"{task.name}_count"] = tf.reduce_sum(weights[task.name])
            if task.kind == "binary":
                probability = tf.sigmoid(outputs[task.name][:, 0])
                bins = tf.clip_by_value(tf.cast(probability * AUC_BINS, tf.int32), 0, AUC_BINS - 1)
                label = labels[task.name][:, 0] * weights[task.name]
                negative = (1.0 - labels[task.name][:, 0]) * weights[task.name]
                result[f"{task.name}_positives"] = tf.math.unsorted_segment_sum(label, bins, AUC_BINS)
                result[f"{task.name}_negatives"] = tf.math.unsorted_segment_sum(negative, bins, AUC_BINS)
        return result

    def _distributed_step(self, batch):
        return summed_over_replicas(self.strategy, self._replica_step, batch)

    def _value_shapes(self) -> dict[str, tuple]:
        """The keys of :meth:`_replica_step`'s result and their shapes."""
        shapes = {}
        for task in self.spec.tasks:
            shapes[f"{task.name}_loss_sum"] = shapes[f"{task.name}_count"] = ()
            if task.kind == "binary":
                shapes[f"{task.name}_positives"] = shapes[f"{task.name}_negatives"] = (AUC_BINS,)
        return shapes

    def _distributed_steps(self, iterator, steps):
        """Up to ``steps`` eval steps in one tf.while_loop; ``(steps run, sums of the step values)``."""
        sums = {key: tf.zeros(shape) for key, shape in self._value_shapes().items()}
        return summed_steps(self._distributed_step, iterator, steps, sums)

    def sums(self):
        """Yields, for each call over the eval split, the sums of :meth:`_replica_step`'s
        values (numpy) over that call's batches.

        A call runs ``steps_per_execution`` batches in one compiled loop, as training does.
        """
        batches = self.pipeline.distributed("eval")
        if self.steps_per_execution == 1:
            for batch in batches:
                yield {key: value.numpy() for key, value in self._step_fn(batch).items()}
            return
        iterator, steps = iter(batches), tf.constant(self.steps_per_execution, tf.int32)
        while True:
            done, sums = self._steps_fn(iterator, steps)
            if int(done):
                yield {key: value.numpy() for key, value in sums.items()}
            if int(done) < self.steps_per_execution:
                return

    def evaluate(self) -> dict[str, float]:
        """Eval-split metrics: ``val_<task>_loss``, ``val_<task>_auc`` (binary), ``val_loss``."""
        totals: dict[str, np.ndarray] = {}
        for sums in self.sums():
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + value.astype(np.float64)
        logs, val_loss = {}, 0.0
        for task in self.spec.tasks:
            loss = float(totals[f"{task.name}_loss_sum"] / max(totals[f"{task.name}_count"], 1.0))
            logs[f"val_{task.name}_loss"] = loss
            val_loss += task.weight * loss
            if task.kind == "binary":
                logs[f"val_{task.name}_auc"] = histogram_auc(totals[f"{task.name}_positives"], totals[f"{task.name}_negatives"])
        logs["val_loss"] = val_loss
        return logs
