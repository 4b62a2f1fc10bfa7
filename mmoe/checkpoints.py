"""Checkpoints and resume: the loop's position saved with the weights, so a killed run goes on.

A checkpoint (``tf.train.CheckpointManager`` under ``Workdir.checkpoints_dir``) holds the trained
objects (weights, optimizer, loss weights) and the loop's position: the global step, the epoch,
the step within it, and the early-stopping state (best value and epoch). Beside it,
``Workdir.checkpoint_history_json`` holds the per-epoch history of the epochs done, and
``Workdir.best_weights`` the best epoch's weights.
"""

from __future__ import annotations

import json
import logging
import math

import keras
import tensorflow as tf

from feature_specs.artifacts import Workdir

log = logging.getLogger(__name__)

MAX_TO_KEEP = 3  # checkpoints kept; older ones are deleted


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """``(is_chief, task_id)`` of this process; a single process is the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_id = int(resolver.task_id or 0)
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    is_chief = resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and task_id == 0)
    return is_chief, task_id


class LoopCheckpoints:
    """The loop's position as variables, and the checkpoints that save and restore it.

    Args:
        outputs: Workdir this process writes to (its ``checkpoints_dir``, ``best_weights``).
        trained: the objects saved beside the position, e.g. ``{"core": model, "optimizer":
            optimizer, "log_variances": {task: variable}}`` (``tf.train.Checkpoint`` keywords).

    Attributes:
        step, epoch, step_in_epoch: int64 scalar variables; the global step, the current
            (0-based) epoch and the steps done in it.
        best_value: float64 scalar, the best early-stopping metric so far (nan before any).
        best_epoch: int64 scalar, its (0-based) epoch; -1 before any.
        manager: the ``tf.train.CheckpointManager``.
    """

    def __init__(self, outputs: Workdir, trained: dict):
        self.outputs = outputs
        # Plain host variables, saved with the weights.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.best_value = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="best_value")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.checkpoint = tf.train.Checkpoint(
            **trained, step=self.step, epoch=self.epoch, step_in_epoch=self.step_in_epoch,
            best_value=self.best_value, best_epoch=self.best_epoch,
        )
        self.manager = self._manager()

    @property
    def directory(self) -> str:
        return self.outputs.checkpoints_dir

    def _manager(self) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=MAX_TO_KEEP)

    def restore(self) -> bool:
        """Restores the newest checkpoint, if any; returns whether one was found."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return False
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        log.info(
            "resuming from %s: step %d (epoch %d, step %d of the epoch)",
            latest, int(self.step), int(self.epoch) + 1, int(self.step_in_epoch),
        )
        return True

    def save(self) -> None:
        """Saves a checkpoint numbered by the global step."""
        self.manager.save(checkpoint_number=int(self.step))

    def clear(self) -> None:
        """Removes the checkpoints and their history (a finished run is not resumed by the next one)."""
        if tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)
        # The manager read the directory's state when it was made: make it anew.
        self.manager = self._manager()

    def load_history(self) -> dict[str, list[float]]:
        """The per-epoch history saved with the checkpoints; ``{}`` when there is none."""
        path = self.outputs.checkpoint_history_json
        if not tf.io.gfile.exists(path):
            return {}
        with tf.io.gfile.GFile(path) as handle:
            return json.load(handle)

    def save_history(self, history: dict[str, list[float]]) -> None:
        """Saves ``history`` (metric -> one value per epoch done) beside the checkpoints."""
        tf.io.gfile.makedirs(self.directory)
        with tf.io.gfile.GFile(self.outputs.checkpoint_history_json, "w") as handle:
            json.dump(history, handle)

    def keep_best(self, model: keras.Model, epoch: int, value: float) -> None:
        """Records ``epoch`` (0-based) as the best, with metric ``value``, and saves ``model``'s weights."""
        self.best_value.assign(value)
        self.best_epoch.assign(epoch)
        tf.io.gfile.makedirs(self.outputs.model_dir)
        model.save_weights(self.outputs.best_weights)

    def restore_best(self, model: keras.Model) -> bool:
        """Loads the best epoch's weights into ``model``; returns whether there were any."""
        if int(self.best_epoch) < 0 or not tf.io.gfile.exists(self.outputs.best_weights):
            return False
        model.load_weights(self.outputs.best_weights)
        return True
