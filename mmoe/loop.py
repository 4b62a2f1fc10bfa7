"""The training loop: one compiled train step, the same for one process and for tf.distribute.

Keras 3's ``Model.fit`` cannot train under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585),
so training is a custom step run with ``strategy.run``; with no strategy it runs under the default
one, so single-process and multi-worker training share every line.

* Input: the pipeline's TFRecord shards, read in parallel (``mmoe.data.read_records``) ->
  shuffle -> batch -> parse -> the model's preprocessing layers
  (lookups, bucketizing, normalizing) in tf.data, in parallel and prefetched, optionally cached in
  memory after the first epoch (``training.cache``, when the train split fits in half the
  available memory). The step sees only integer indices and floats, so it can be XLA-compiled
  (``training.jit_compile``).
* Steps: ``training.steps_per_execution`` optimizer steps per call of one compiled loop
  (``Trainer.train_steps``), so the per-call host work (Python, dispatch, reading the losses
  back) is paid once per call; across replicas each batch is padded to the full per-replica size
  (``pad_rows``).
* Losses: per task, averaged over the rows where the task's label is observed (its mask), across
  all replicas; combined with fixed weights or with uncertainty weighting (Kendall et al. 2018).
* Checkpoints (``tf.train.CheckpointManager``) every ``training.checkpoint_every_steps`` steps and
  at each epoch end hold the weights, the optimizer, the loss weights and the loop's position
  (epoch, step in epoch, early-stopping state): a killed run started again resumes there.
* Each epoch ends with an eval pass (per-task loss, AUC for binary tasks); the best epoch by the
  spec's ``training.early_stopping.metric`` is kept, and training stops after ``patience`` epochs
  without improvement.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from feature_specs.artifacts import Workdir, join
from feature_specs.spec import FeatureSpec
from mmoe.data import parse_batches, read_records, split_batch, split_files
from mmoe.model import RankingModels, build_models
from mmoe.optimizers import make_optimizer

log = logging.getLogger(__name__)

AUC_BINS = 2000  # histogram bins of the streaming eval AUC (exact to about 1e-3)
CACHED_BATCH_SHUFFLE = 4096  # batches whose order a cached epoch shuffles
CACHE_MEMORY_SHARE = 0.5  # the most of the available memory the train cache may take
_SUM = tf.distribute.ReduceOp.SUM


def per_example_loss(loss: str, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Per-example loss ``(batch,)`` of ``(batch, 1)`` labels and outputs (logits for binary)."""
    if loss == "binary_crossentropy":
        return keras.losses.binary_crossentropy(labels, outputs, from_logits=True)
    if loss == "huber":
        return keras.losses.huber(labels, outputs)
    return keras.losses.mean_squared_error(labels, outputs)


def histogram_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC AUC from weighted score histograms over equal-width bins of [0, 1] (ties count 1/2)."""
    positives, negatives = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    total_pos, total_neg = positives.sum(), negatives.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    above = np.cumsum(positives[::-1])[::-1] - positives  # positives scored in higher bins
    return float((negatives * (above + 0.5 * positives)).sum() / (total_pos * total_neg))


def _summed_steps(step, iterator, steps, sums: dict):
    """Runs ``step`` on up to ``steps`` batches of ``iterator`` in one tf.while_loop (inside a
    tf.function), adding each step's values to ``sums`` (same keys and shapes).

    Returns:
        ``(steps run, sums)``; fewer steps than asked when the iterator runs out.
    """
    done = tf.constant(0)
    for _ in tf.range(steps):
        batch = iterator.get_next_as_optional()  # empty after the last batch
        if not batch.has_value():
            break
        values = step(batch.get_value())
        if set(values) != set(sums):  # checked when traced
            raise ValueError(f"step values {sorted(values)} do not match the sums' keys {sorted(sums)}")
        sums = {key: sums[key] + values[key] for key in sums}
        done += 1
    return done, sums


def pad_rows(batch, rows: int):
    """Pads every tensor of ``batch`` (a nest of ``(n, ...)`` tensors, ``n <= rows``) with zero
    rows to the static shape ``(rows, ...)``.

    Across replicas each step's embedding gradients are all-gathered, and every replica must
    bring the same shapes, step after step of one compiled loop: an epoch's partial last batch
    (or the empty batch of a worker whose shard ran out first) is padded to a full one.
    The padded rows have zero sample weights, so they add nothing to a loss sum or a count (an
    auxiliary loss over the whole batch, the gates' load balancing, does see them on that step).
    """
    batch = tf.nest.map_structure(tf.convert_to_tensor, batch)
    missing = rows - tf.shape(tf.nest.flatten(batch)[0])[0]  # every tensor has the batch's rows
    tf.debugging.assert_non_negative(missing, message=f"a batch has more than {rows} rows")

    def pad(tensor):
        padded = tf.pad(tensor, [[0, missing]] + [[0, 0]] * (tensor.shape.rank - 1))
        return tf.ensure_shape(padded, [rows, *tensor.shape[1:]])

    return tf.nest.map_structure(pad, batch)


def available_memory_bytes() -> int | None:
    """The memory the kernel can give this process now (``MemAvailable``, Linux), else None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def example_bytes(element_spec) -> int:
    """Bytes of one example of a batched dataset whose ``element_spec`` is a nest of
    ``(batch, ...)`` tensor specs (the batch dimension excluded)."""
    return sum(
        int(np.prod([d or 1 for d in spec.shape[1:]])) * spec.dtype.size for spec in tf.nest.flatten(element_spec)
    )


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """``(is_chief, task_id)`` of this process; a single process is the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_id = int(resolver.task_id or 0)
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    is_chief = resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and task_id == 0)
    return is_chief, task_id


@dataclass
class EpochLogs:
    """Sums of one epoch's per-step values, averaged into the epoch's logs."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def add(self, sums: dict[str, float], steps: int = 1) -> None:
        """Adds ``steps`` steps whose values summed to ``sums``."""
        for key, value in sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.steps += steps

    def means(self) -> dict[str, float]:
        return {key: value / max(self.steps, 1) for key, value in self.sums.items()}


class Trainer:
    """Builds the ranking models inside ``strategy.scope()`` and trains them.

    Args:
        spec: FeatureSpec. Tasks, model and ``training`` settings.
        workdir: Workdir holding ``data/`` and ``artifacts/``.
        strategy: a ``tf.distribute`` strategy, e.g. ``MultiWorkerMirroredStrategy`` (create it
            first thing in the process); the default strategy (one device) when omitted.
        jit_compile: overrides ``spec.training.jit_compile``.
        batch_size: overrides ``spec.training.batch_size`` (the global batch).
        checkpoint_dir: where checkpoints go; default ``<model_dir>/checkpoints`` on the chief and
            ``<model_dir>/workers/worker-<id>/checkpoints`` on other workers.

    Attributes:
        models: RankingModels. ``models.core`` is what the step trains.
        variables: the trained variables: the core model's, plus one log-variance per task
            under uncertainty weighting.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        workdir: Workdir,
        strategy: tf.distribute.Strategy | None = None,
        jit_compile: bool | None = None,
        batch_size: int | None = None,
        checkpoint_dir: str | None = None,
    ):
        self.spec, self.workdir = spec, workdir
        self.settings = spec.training
        self.strategy = strategy or tf.distribute.get_strategy()
        self.jit_compile = self.settings.jit_compile if jit_compile is None else bool(jit_compile)
        self.batch_size = batch_size or self.settings.batch_size
        self.is_chief, self.task_id = worker_role(self.strategy)
        self.checkpoint_dir = checkpoint_dir or join(self.output_dir, "checkpoints")
        self._cached_train: tf.data.Dataset | None = None
        self._cache_refused = False  # training.cache is on, but the train split would not fit
        with self.strategy.scope():
            self.models: RankingModels = build_models(spec, workdir)
            self.optimizer = make_optimizer(self.settings)
            self.log_variances = {}
            if self.settings.loss_weighting == "uncertainty":
                self.log_variances = {
                    task.name: keras.Variable(0.0, name=f"log_variance_{task.name}") for task in spec.tasks
                }
            self.variables = list(self.models.core.trainable_variables) + list(self.log_variances.values())
            self.optimizer.build(self.variables)
        # The loop's position; plain host variables, saved with the weights.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.best_value = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="best_value")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.checkpoint = tf.train.Checkpoint(
            core=self.models.core, optimizer=self.optimizer, log_variances=self.log_variances,
            step=self.step, epoch=self.epoch, step_in_epoch=self.step_in_epoch,
            best_value=self.best_value, best_epoch=self.best_epoch,
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir, max_to_keep=3)
        # XLA compiles the forward and backward pass. In one process (no strategy given) it also
        # compiles the Adam update, as a second cluster: about 1 ms a step at the reference size
        # against about 3 ms of per-variable graph ops (benchmarks/train.py). Under a tf.distribute
        # strategy the update stays in graph mode, where apply_gradients all-reduces the gradients
        # across workers (collectives XLA cannot compile on CPU).
        self._gradients = tf.function(self._loss_and_gradients, jit_compile=self.jit_compile)
        self._apply_update = self._apply_gradients
        if self.jit_compile and strategy is None:
            self._apply_update = tf.function(self._apply_gradients, jit_compile=True)
        self._train_fn = tf.function(self._distributed_train_step)
        self._train_steps_fn = tf.function(self._distributed_train_steps)
        self.steps_per_execution = self.settings.steps_per_execution
        # Across replicas every step pads its batch to the full per-replica size (see pad_rows):
        # tf.distribute splits each global batch_size batch among the replicas.
        replicas = self.strategy.num_replicas_in_sync
        self._pad_to = -(-self.batch_size // replicas) if replicas > 1 else None
        self._eval_fn = tf.function(self._distributed_eval_step)
        self._eval_steps_fn = tf.function(self._distributed_eval_steps)

    # ----------------------------------------------------------------------------------------
    # Paths and input

    @property
    def output_dir(self) -> str:
        """``model/`` on the chief; a private ``model/workers/worker-<id>`` on other workers."""
        if self.is_chief:
            return self.workdir.model_dir
        return join(self.workdir.model_dir, "workers", f"worker-{self.task_id}")

    @property
    def best_weights_path(self) -> str:
        return join(self.output_dir, "best.weights.h5")

    @property
    def history_path(self) -> str:
        return join(self.checkpoint_dir, "history.json")

    def _preprocessed_batches(self, split: str, shuffle_seed: int | None) -> tf.data.Dataset:
        """Records (shuffled with ``shuffle_seed`` unless None) -> batch -> parse -> preprocess."""
        records = read_records(split_files(self.workdir, split))
        if shuffle_seed is not None and self.settings.shuffle_buffer:
            records = records.shuffle(self.settings.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        preprocess = self.models.preprocess

        def to_model_inputs(parsed):
            features, labels, weights = split_batch(self.spec, parsed)
            return preprocess(features, training=False), labels, weights

        return parse_batches(records, self.spec, self.batch_size).map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE)

    def _cache_fits(self, batches: tf.data.Dataset) -> bool:
        """Whether the preprocessed train split (``batches``) fits in :data:`CACHE_MEMORY_SHARE`
        of the available memory; when it does not, says so and why. Rows come from the
        pipeline's report; without one (or on a platform that does not report free memory) the
        cache is used as asked."""
        available = available_memory_bytes()
        if available is None or not tf.io.gfile.exists(self.workdir.report_json):
            return True
        with tf.io.gfile.GFile(self.workdir.report_json) as handle:
            rows = json.load(handle).get("written", {}).get("train")
        if not rows:
            return True
        workers = max(1, self.strategy.num_replicas_in_sync)  # each caches its own shard (a replica per worker on CPU)
        need = rows / workers * example_bytes(batches.element_spec)
        if need <= CACHE_MEMORY_SHARE * available:
            return True
        log.warning("training.cache is on, but the %s train rows would take %.1f GB in memory, more than %d%% of "
                    "the %.1f GB available: training reads the TFRecords every epoch instead",
                    f"{rows:,}", need / 1e9, 100 * CACHE_MEMORY_SHARE, available / 1e9)
        return False

    def _train_batches(self, epoch: int, cache: bool) -> tf.data.Dataset:
        if cache and self._cached_train is None and not self._cache_refused:
            batches = self._preprocessed_batches("train", self.settings.seed)
            # Examples are shuffled once, then whole preprocessed batches are cached in memory and
            # their order is reshuffled each epoch: input costs nothing after the first epoch.
            if self._cache_fits(batches):
                self._cached_train = batches.cache()
            else:
                self._cache_refused = True
        if not cache or self._cached_train is None:
            return self._preprocessed_batches("train", self.settings.seed + epoch)
        return self._cached_train.shuffle(CACHED_BATCH_SHUFFLE, seed=self.settings.seed + epoch,
                                          reshuffle_each_iteration=False)

    def dataset(self, split: str, epoch: int = 0, skip_batches: int = 0, cache: bool | None = None) -> tf.data.Dataset:
        """Preprocessed ``(features, labels, sample_weights)`` batches of ``split``.

        Train batches are shuffled with ``seed + epoch``, so epoch ``e`` sees the same order in
        a resumed run; ``skip_batches`` drops the batches a resumed epoch has already trained on.
        With ``training.cache`` the preprocessed train batches are kept in memory after the
        first epoch (examples shuffled once, batch order reshuffled every epoch); ``cache``
        overrides that setting.
        Features are ``(batch, 1)`` int indices / float values; labels ``(batch, 1)`` float32;
        sample weights ``(batch,)`` float32 (the task's mask).
        """
        if split == "train":
            batches = self._train_batches(epoch, self.settings.cache if cache is None else cache)
        else:
            batches = self._preprocessed_batches(split, None)
        if skip_batches:
            batches = batches.skip(skip_batches)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return batches.prefetch(tf.data.AUTOTUNE).with_options(options)

    # ----------------------------------------------------------------------------------------
    # Steps

    def _task_loss_sums(self, outputs, labels, weights) -> dict[str, tf.Tensor]:
        return {
            task.name: tf.reduce_sum(per_example_loss(task.loss, labels[task.name], outputs[task.name]) * weights[task.name])
            for task in self.spec.tasks
        }

    def _combine(self, task_losses: dict[str, tf.Tensor], num_replicas: int) -> tf.Tensor:
        """Weighted total of per-replica task losses (each already divided by the global count)."""
        total = tf.constant(0.0)
        for task in self.spec.tasks:
            loss = task_losses[task.name]
            if self.log_variances:
                # Kendall et al.: exp(-s) L + s/2 for classification, exp(-s) L / 2 + s/2 for regression.
                s = self.log_variances[task.name].value
                scale = 1.0 if task.kind == "binary" else 0.5
                loss = scale * tf.exp(-s) * loss + 0.5 * s / num_replicas
            total += task.weight * loss
        return total

    def _loss_and_gradients(self, features, labels, weights, global_counts):
        num_replicas = self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            outputs = self.models.core(features, training=True)
            sums = self._task_loss_sums(outputs, labels, weights)
            task_losses = {name: sums[name] / tf.maximum(global_counts[name], 1.0) for name in sums}
            total = self._combine(task_losses, num_replicas)
            if self.models.core.losses:  # auxiliary losses, e.g. gate load balancing
                total += tf.add_n(self.models.core.losses) / num_replicas
        gradients = tape.gradient(total, self.variables)
        return total, task_losses, gradients

    def _apply_gradients(self, gradients) -> None:
        """Adam on :attr:`variables`; ``gradients`` in the same order (embedding ones IndexedSlices)."""
        self.optimizer.apply_gradients(zip(gradients, self.variables))

    def _replica_train_step(self, features, labels, weights):
        if self._pad_to is not None:
            features, labels, weights = pad_rows((features, labels, weights), self._pad_to)
        context = tf.distribute.get_replica_context()
        counts = {task.name: tf.reduce_sum(weights[task.name]) for task in self.spec.tasks}
        global_counts = context.all_reduce(_SUM, counts)
        total, task_losses, gradients = self._gradients(features, labels, weights, global_counts)
        self._apply_update(gradients)
        return {"loss": total, **{f"{name}_loss": value for name, value in task_losses.items()}}

    def _distributed_train_step(self, batch):
        per_replica = self.strategy.run(self._replica_train_step, args=batch)
        return {key: self.strategy.reduce(_SUM, value, axis=None) for key, value in per_replica.items()}

    def _distributed_train_steps(self, iterator, steps):
        """Up to ``steps`` train steps in one tf.while_loop; ``(steps run, sums of the step values)``."""
        sums = {key: tf.constant(0.0) for key in ["loss", *(f"{task.name}_loss" for task in self.spec.tasks)]}
        return _summed_steps(self._distributed_train_step, iterator, steps, sums)

    def train_step(self, batch) -> dict[str, float]:
        """One optimizer step on a (distributed) batch from :meth:`dataset`.

        Returns:
            ``loss`` (the weighted total) and ``<task>_loss``, each the mean over the global batch.
        """
        values = self._train_fn(batch)
        self.step.assign_add(1)
        return {key: float(value) for key, value in values.items()}

    def train_steps(self, iterator, steps: int) -> tuple[int, dict[str, float]]:
        """Up to ``steps`` optimizer steps on batches of ``iterator``, in one call of the compiled loop.

        Args:
            iterator: an iterator over a (distributed) :meth:`dataset`.
            steps: int. The most steps to run; fewer when the iterator runs out.

        Returns:
            ``(done, sums)``: the steps run, and the sums over them of ``loss`` and
            ``<task>_loss`` (each step's value is the mean over its global batch).
        """
        done, sums = self._train_steps_fn(iterator, tf.constant(steps, tf.int32))
        done = int(done)
        self.step.assign_add(done)
        return done, {key: float(value) for key, value in sums.items()}

    def _replica_eval_step(self, features, labels, weights):
        outputs = self.models.core(features, training=False)
        sums = self._task_loss_sums(outputs, labels, weights)
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

    def _distributed_eval_step(self, batch):
        per_replica = self.strategy.run(self._replica_eval_step, args=batch)
        return {key: self.strategy.reduce(_SUM, value, axis=None) for key, value in per_replica.items()}

    def _eval_value_shapes(self) -> dict[str, tuple]:
        """The keys of :meth:`_replica_eval_step`'s result and their shapes."""
        shapes = {}
        for task in self.spec.tasks:
            shapes[f"{task.name}_loss_sum"] = shapes[f"{task.name}_count"] = ()
            if task.kind == "binary":
                shapes[f"{task.name}_positives"] = shapes[f"{task.name}_negatives"] = (AUC_BINS,)
        return shapes

    def _distributed_eval_steps(self, iterator, steps):
        """Up to ``steps`` eval steps in one tf.while_loop; ``(steps run, sums of the step values)``."""
        sums = {key: tf.zeros(shape) for key, shape in self._eval_value_shapes().items()}
        return _summed_steps(self._distributed_eval_step, iterator, steps, sums)

    def _eval_sums(self):
        """Yields, for each call over the eval split, the sums of :meth:`_replica_eval_step`'s
        values (numpy) over that call's batches.

        A call runs ``steps_per_execution`` batches in one compiled loop, as training does.
        """
        batches = self.strategy.experimental_distribute_dataset(self.dataset("eval"))
        if self.steps_per_execution == 1:
            for batch in batches:
                yield {key: value.numpy() for key, value in self._eval_fn(batch).items()}
            return
        iterator, steps = iter(batches), tf.constant(self.steps_per_execution, tf.int32)
        while True:
            done, sums = self._eval_steps_fn(iterator, steps)
            if int(done):
                yield {key: value.numpy() for key, value in sums.items()}
            if int(done) < self.steps_per_execution:
                return

    def evaluate(self) -> dict[str, float]:
        """Eval-split metrics: ``val_<task>_loss``, ``val_<task>_auc`` (binary), ``val_loss``."""
        totals: dict[str, np.ndarray] = {}
        for sums in self._eval_sums():
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

    # ----------------------------------------------------------------------------------------
    # The loop

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

    def _save_checkpoint(self) -> None:
        self.manager.save(checkpoint_number=int(self.step))

    def _load_history(self) -> dict[str, list[float]]:
        if not tf.io.gfile.exists(self.history_path):
            return {}
        with tf.io.gfile.GFile(self.history_path) as handle:
            return json.load(handle)

    def _save_history(self, history: dict[str, list[float]]) -> None:
        tf.io.gfile.makedirs(self.checkpoint_dir)
        with tf.io.gfile.GFile(self.history_path, "w") as handle:
            json.dump(history, handle)

    def _improved(self, value: float) -> bool:
        best = float(self.best_value.numpy())
        if math.isnan(value):
            return False
        if math.isnan(best):
            return True
        stopping = self.settings.early_stopping
        if stopping.mode == "max":
            return value > best + stopping.min_delta
        return value < best - stopping.min_delta

    def _end_epoch(self, epoch: int, logs: dict[str, float]) -> bool:
        """Keeps the best weights; returns True when early stopping says stop."""
        stopping = self.settings.early_stopping
        value = logs[stopping.metric]
        if self._improved(value):
            self.best_value.assign(value)
            self.best_epoch.assign(epoch)
            tf.io.gfile.makedirs(self.output_dir)
            self.models.core.save_weights(self.best_weights_path)
            log.info("epoch %d: %s improved to %.5f; kept as the best model", epoch + 1, stopping.metric, value)
        waited = epoch - int(self.best_epoch)
        return stopping.patience > 0 and waited >= stopping.patience

    def fit(self, epochs: int | None = None, callbacks=(), verbose: int = 2) -> dict[str, list[float]]:
        """Trains for ``epochs`` (default ``spec.training.epochs``), resuming from a checkpoint.

        Args:
            epochs: total epochs of the run (a resumed run does only the rest).
            callbacks: ``keras.callbacks.Callback`` objects; ``on_train_begin``,
                ``on_epoch_begin``, ``on_epoch_end(epoch, logs)`` and ``on_train_end`` are called.
            verbose: 2: a progress bar per epoch; 1: one line per epoch; 0: silent (chief only).

        Returns:
            The history: metric name -> one value per epoch (resumed runs include the epochs
            before the interruption). Afterwards the models hold the best epoch's weights.
        """
        epochs = epochs or self.settings.epochs
        resumed = self.restore()
        history = self._load_history() if resumed else {}
        writer = tf.summary.create_file_writer(self.workdir.logs_dir) if self.is_chief else None
        callbacks = list(callbacks)
        for callback in callbacks:
            callback.set_model(self.models.train)
            callback.on_train_begin()
        stop = False
        steps_per_epoch = None
        while int(self.epoch) < epochs and not stop:
            epoch, skip = int(self.epoch), int(self.step_in_epoch)
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            epoch_logs = self._train_epoch(epoch, epochs, skip, steps_per_epoch, verbose)
            steps_per_epoch = skip + epoch_logs.steps
            logs = {**epoch_logs.means(), **self.evaluate()}
            for task, variable in self.log_variances.items():
                logs[f"{task}_log_variance"] = float(variable.numpy())
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            for key, value in logs.items():
                history.setdefault(key, []).append(float(value))
            stop = self._end_epoch(epoch, logs)
            self.epoch.assign(epoch + 1)
            self.step_in_epoch.assign(0)
            self._save_history(history)
            self._save_checkpoint()
            self._write_summaries(writer, epoch, logs)
            if verbose and self.is_chief:
                print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())),
                      flush=True)
            if stop:
                log.info("early stopping after epoch %d: no %s improvement in %d epochs",
                         epoch + 1, self.settings.early_stopping.metric, self.settings.early_stopping.patience)
        for callback in callbacks:
            callback.on_train_end()
        self._restore_best()
        return history

    def _train_epoch(self, epoch: int, epochs: int, skip: int, steps_per_epoch, verbose: int) -> EpochLogs:
        dataset = self.strategy.experimental_distribute_dataset(self.dataset("train", epoch, skip))
        progress = keras.utils.Progbar(steps_per_epoch, verbose=1 if verbose >= 2 and self.is_chief else 0)
        if verbose >= 2 and self.is_chief:
            print(f"epoch {epoch + 1}/{epochs}" + (f" (resumed at step {skip})" if skip else ""))
        epoch_logs = EpochLogs()
        every = self.settings.checkpoint_every_steps
        batches = iter(dataset)
        while True:
            steps = self.steps_per_execution
            if every:  # stop on the checkpoint step
                steps = min(steps, every - int(self.step) % every)
            done, sums = self._run_steps(batches, steps)
            if done:
                self.step_in_epoch.assign_add(done)
                epoch_logs.add(sums, done)
                # Progbar weights each update's values by the steps it covers: pass their means.
                progress.update(skip + epoch_logs.steps, values=[(k, v / done) for k, v in sums.items()])
                if every and int(self.step) % every == 0:
                    self._save_checkpoint()
            if done < steps:  # the epoch's batches ran out
                return epoch_logs

    def _run_steps(self, batches, steps: int) -> tuple[int, dict[str, float]]:
        if self.steps_per_execution > 1:
            return self.train_steps(batches, steps)
        batch = next(batches, None)
        return (0, {}) if batch is None else (1, self.train_step(batch))

    def _write_summaries(self, writer, epoch: int, logs: dict[str, float]) -> None:
        if writer is None:
            return
        with writer.as_default(step=epoch + 1):
            for key, value in logs.items():
                tf.summary.scalar(key, value)
        writer.flush()

    def _restore_best(self) -> None:
        if int(self.best_epoch) >= 0 and tf.io.gfile.exists(self.best_weights_path):
            self.models.core.load_weights(self.best_weights_path)
            log.info("restored the best epoch (%d, %s %.5f)", int(self.best_epoch) + 1,
                     self.settings.early_stopping.metric, float(self.best_value.numpy()))

    def clear_checkpoints(self) -> None:
        """Removes this run's checkpoints (a finished run is not resumed by the next one)."""
        if tf.io.gfile.exists(self.checkpoint_dir):
            tf.io.gfile.rmtree(self.checkpoint_dir)
        # The manager read the directory's state when it was made: make it anew.
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir, max_to_keep=3)
