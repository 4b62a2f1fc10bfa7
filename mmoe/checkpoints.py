"""Checkpoints and resume: the loop's position saved with the weights, so a killed run goes on.

A checkpoint (``tf.train.CheckpointManager`` under ``Workdir.checkpoints_dir``) holds the trained
objects (weights, optimizer, loss weights) and the loop's position: the global step, the epoch,
the step within it, and the early-stopping state (best value and epoch). Beside it,
``Workdir.checkpoint_history_json`` holds the per-epoch history of the epochs done, and
``Workdir.best_weights`` the best epoch's weights.

A checkpoint is restored only once it proves intact: every tensor it holds reads back (a
truncated or overwritten file fails its length or checksum), and ``history.json`` covers the
epochs it has done. A newest checkpoint that fails is skipped with a warning naming it, for
the one before it; when none is intact the run starts from scratch, with a warning. An index
file (``checkpoint``) that does not parse is removed with a warning, and the checkpoints are
then found by their file names.
"""

from __future__ import annotations

import json
import logging
import math
import re

import keras
import tensorflow as tf

from feature_specs.artifacts import Workdir, join
from feature_specs.errors import UserError

log = logging.getLogger(__name__)

MAX_TO_KEEP = 3  # checkpoints kept; older ones are deleted
INDEX_FILE = "checkpoint"  # tf.train.CheckpointManager's index of the checkpoints in its directory
PREFIX = "ckpt"  # ... and the prefix of their names, ``ckpt-<step>``
# The epoch variable as a checkpoint names it: the ``epoch=`` keyword of LoopCheckpoints' tf.train.Checkpoint.
EPOCH_KEY = "epoch/.ATTRIBUTES/VARIABLE_VALUE"
# What reading a damaged checkpoint raises: a short file (IndexError "Read less bytes than
# requested"), a failed checksum or a missing file (tf.errors.OpError), an unparsable index (ValueError).
UNREADABLE = (IndexError, ValueError, tf.errors.OpError)


class CheckpointMismatchError(UserError):
    """An intact checkpoint that was written by another model than the one being trained."""


def first_line(exc: BaseException) -> str:
    """``<type>: <first line of the message>`` of ``exc`` (TensorFlow's messages run to many lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


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
        best_step: int64 scalar, the global step the best model was kept at; -1 before any.
        manager: the ``tf.train.CheckpointManager``, made on first use (so that a run that
            starts afresh clears the directory without reading it).
    """

    def __init__(self, outputs: Workdir, trained: dict):
        self.outputs = outputs
        # Plain host variables, saved with the weights.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.best_value = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="best_value")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
        self.checkpoint = tf.train.Checkpoint(
            **trained, step=self.step, epoch=self.epoch, step_in_epoch=self.step_in_epoch,
            best_value=self.best_value, best_epoch=self.best_epoch, best_step=self.best_step,
        )
        self._manager: tf.train.CheckpointManager | None = None
        self._history: dict[str, list[float]] = {}

    @property
    def directory(self) -> str:
        return self.outputs.checkpoints_dir

    @property
    def index_file(self) -> str:
        return join(self.directory, INDEX_FILE)

    @property
    def manager(self) -> tf.train.CheckpointManager:
        if self._manager is None:
            self._index_state()  # removes an index that does not parse, which the manager would raise on
            self._manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=MAX_TO_KEEP)
        return self._manager

    def _index_state(self):
        """The index's ``CheckpointState`` proto; None when there is none or it does not parse
        (then it is removed, with a warning)."""
        try:
            state = tf.train.get_checkpoint_state(self.directory)  # None for text that does not parse
            problem = "not a checkpoint state"
        except ValueError as exc:  # bytes that are not UTF-8 text, or a state without a newest checkpoint
            state, problem = None, str(exc)
        if state is None and tf.io.gfile.exists(self.index_file):
            log.warning("the checkpoint index %s is unreadable (%s); removed it, and looking for checkpoints "
                        "by their file names", self.index_file, problem)
            tf.io.gfile.remove(self.index_file)
        return state

    def saved_checkpoints(self) -> list[str]:
        """Paths (prefixes) of the saved checkpoints, newest first.

        The index's list when it parses; otherwise every ``ckpt-<step>.index`` in the
        directory, the highest step first.
        """
        state = self._index_state()
        if state is not None:
            paths = [path for path in state.all_model_checkpoint_paths if path != state.model_checkpoint_path]
            return [state.model_checkpoint_path, *reversed(paths)]
        if not tf.io.gfile.isdir(self.directory):
            return []
        steps = []
        for name in tf.io.gfile.listdir(self.directory):
            match = re.fullmatch(rf"{PREFIX}-(\d+)\.index", name)
            if match:
                steps.append(int(match.group(1)))
        return [join(self.directory, f"{PREFIX}-{step}") for step in sorted(steps, reverse=True)]

    def problem(self, path: str, history: dict[str, list[float]] | None) -> str | None:
        """Why checkpoint ``path`` cannot be resumed from, or None when it is intact.

        Reads the whole checkpoint, one tensor at a time, before anything is restored from it:
        a restore that failed halfway would leave the model part old and part new.

        Args:
            path: str. A checkpoint prefix (``.../ckpt-40``).
            history: the saved per-epoch history (metric -> values), or None when it is unreadable.
        """
        try:
            reader = tf.train.load_checkpoint(path)
            for key in reader.get_variable_to_dtype_map():
                reader.get_tensor(key)  # reads and checksums every tensor
            epochs_done = int(reader.get_tensor(EPOCH_KEY))
        except UNREADABLE as exc:
            return first_line(exc)
        covered = 0 if history is None else min((len(values) for values in history.values()), default=0)
        if covered < epochs_done:
            return f"it has done {epochs_done} epochs, and {self.outputs.checkpoint_history_json} holds {covered}"
        return None

    def restore(self) -> bool:
        """Restores the newest intact checkpoint, if any; returns whether one was restored.

        Damaged checkpoints are skipped with a warning (see the module's docstring).

        Raises:
            CheckpointMismatchError: the checkpoint is intact but holds another model's variables
                (the spec changed since it was written).
        """
        history = self._read_history()
        candidates = self.saved_checkpoints()
        for index, path in enumerate(candidates):
            problem = self.problem(path, history)
            if problem is not None:
                fallback = "trying the one before it" if index + 1 < len(candidates) else "starting from scratch"
                log.warning("checkpoint %s cannot be resumed from (%s): %s", path, problem, fallback)
                continue
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (AssertionError, ValueError) as exc:
                raise CheckpointMismatchError(
                    f"checkpoint {path} does not match the model being trained ({first_line(exc)}): "
                    f"was the spec changed? Train with --fresh to start over, or with the spec it was written with"
                ) from exc
            epochs_done = int(self.epoch)
            self._history = {key: values[:epochs_done] for key, values in (history or {}).items() if epochs_done}
            log.info(
                "resuming from %s: step %d (epoch %d, step %d of the epoch)",
                path, int(self.step), epochs_done + 1, int(self.step_in_epoch),
            )
            return True
        return False

    def save(self) -> None:
        """Saves a checkpoint numbered by the global step."""
        self.manager.save(checkpoint_number=int(self.step))

    def clear(self) -> None:
        """Removes the checkpoints and their history (a finished run is not resumed by the next one)."""
        if tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)
        # The manager read the directory's state when it was made: make it anew when next used.
        self._manager = None
        self._history = {}

    def _read_history(self) -> dict[str, list[float]] | None:
        """The saved per-epoch history; ``{}`` when there is none, None (with a warning) when unreadable."""
        path = self.outputs.checkpoint_history_json
        if not tf.io.gfile.exists(path):
            return {}
        try:
            with tf.io.gfile.GFile(path, "rb") as handle:
                history = json.loads(handle.read().decode("utf-8"))
            if isinstance(history, dict) and all(isinstance(values, list) for values in history.values()):
                return history
            problem = "not an object of lists"
        except (ValueError, tf.errors.OpError) as exc:  # not UTF-8, not JSON, or not readable
            problem = str(exc)
        log.warning("the checkpoint history %s is unreadable (%s)", path, problem)
        return None

    def load_history(self) -> dict[str, list[float]]:
        """The per-epoch history of the epochs the restored checkpoint has done; ``{}`` before any.

        The saved history is cut to those epochs: it may hold more when the run was killed
        between writing it and saving the checkpoint, or when an older checkpoint was restored.
        """
        return {key: list(values) for key, values in self._history.items()}

    def save_history(self, history: dict[str, list[float]]) -> None:
        """Saves ``history`` (metric -> one value per epoch done) beside the checkpoints."""
        tf.io.gfile.makedirs(self.directory)
        with tf.io.gfile.GFile(self.outputs.checkpoint_history_json, "w") as handle:
            json.dump(history, handle)

    def keep_best(self, model: keras.Model, epoch: int, value: float) -> None:
        """Records ``epoch`` (0-based) and the current step as the best, with metric ``value``, and
        saves ``model``'s weights."""
        self.best_value.assign(value)
        self.best_epoch.assign(epoch)
        self.best_step.assign(self.step)
        tf.io.gfile.makedirs(self.outputs.model_dir)
        model.save_weights(self.outputs.best_weights)

    def restore_best(self, model: keras.Model) -> bool:
        """Loads the best epoch's weights into ``model``; returns whether there were any."""
        if int(self.best_epoch) < 0 or not tf.io.gfile.exists(self.outputs.best_weights):
            return False
        model.load_weights(self.outputs.best_weights)
        return True
