"""The training loop: one compiled train step, the same for one process and for tf.distribute.

Keras 3's ``Model.fit`` cannot train under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585),
so training is a custom step run with ``strategy.run``; with no strategy it runs under the default
one, so single-process and multi-worker training share every line.

* Input (:mod:`mmoe.input_pipeline`): preprocessed batches of the pipeline's TFRecords, optionally
  cached in memory (``training.cache``); across replicas each batch is padded to the full
  per-replica size.
* Steps: ``training.steps_per_execution`` optimizer steps per call of one compiled loop
  (``Trainer.train_steps``), so the per-call host work (Python, dispatch, reading the losses
  back) is paid once per call. The step sees only integer indices and floats, so it can be
  XLA-compiled (``training.jit_compile``).
* Losses (:mod:`mmoe.losses`): per task, averaged over the rows where the task's label is
  observed (its mask), across all replicas; combined with fixed weights, with uncertainty
  weighting (Kendall et al. 2018) or with GradNorm's learned weights (:mod:`mmoe.gradnorm`).
  With ``training.gradient_surgery: pcgrad`` each task's gradient is taken alone and their
  conflicts projected away (:mod:`mmoe.gradient_surgery`). Both work on each replica's
  gradients (under a tf.distribute strategy, before the all-reduce).
* Checkpoints (:mod:`mmoe.checkpoints`) every ``training.checkpoint_every_steps`` steps and at
  each epoch end hold the weights, the optimizer, the loss weights and the loop's position
  (epoch, step in epoch, early-stopping state): a killed run started again resumes there.
* Each epoch ends with an eval pass (:mod:`mmoe.validation`: per-task loss, AUC for binary
  tasks), and ``training.evaluations_per_epoch`` - 1 more run inside it, evenly spaced in steps;
  the best model by the spec's ``training.early_stopping.metric`` over all of them is kept
  (``best_epoch`` the epoch it was seen in, ``best_step`` its global step), and training stops
  after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec import GRADNORM, PCGRAD, UNCERTAINTY, EarlyStopping, FeatureSpec
from mmoe.checkpoints import LoopCheckpoints, worker_role
from mmoe.data import require_preprocessed
from mmoe.input_pipeline import InputPipeline
from mmoe.layers.dispatch import dropped_fraction
from mmoe.gradient_surgery import add_gradients, project_conflicting
from mmoe.gradnorm import GradNormState, shared_norms
from mmoe.gradnorm import logits_gradient as gradnorm_logits_gradient
from mmoe.losses import task_loss_sums, weighted_task_losses
from mmoe.model import RankingModels, build_models
from mmoe.optimizers import make_optimizer
from mmoe.stages import gate_variables, stage_of_epoch, stage_variables
from mmoe.steps import SUM, summed_over_replicas, summed_steps
from mmoe.validation import Validation

log = logging.getLogger(__name__)


def improved(value: float, best: float, stopping: EarlyStopping) -> bool:
    """Whether ``value`` of ``stopping.metric`` beats ``best`` (nan: none yet) by ``min_delta``."""
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    if stopping.mode == "max":
        return value > best + stopping.min_delta
    return value < best - stopping.min_delta


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

    Every setting comes from ``spec`` (apply command-line overrides first, with
    :func:`mmoe.overrides.with_overrides`).

    Args:
        spec: FeatureSpec. Tasks, model and ``training`` settings (``batch_size`` is the global
            batch).
        workdir: Workdir holding ``data/`` and ``artifacts/`` of a preprocess that completed
            (its ``report.json`` says so; else :class:`mmoe.data.UnfinishedPreprocessError`).
            The chief writes under its ``model/``, other workers under
            ``model/workers/worker-<id>`` (checkpoints, best weights).
        strategy: a ``tf.distribute`` strategy, e.g. ``MultiWorkerMirroredStrategy`` (create it
            first thing in the process); the default strategy (one device) when omitted.

    Attributes:
        models: RankingModels. ``models.core`` is what the step trains.
        variables: the trained variables: the core model's, plus one log-variance per task
            under uncertainty weighting, or GradNorm's logits (last) under ``gradnorm``.
        gradnorm: GradNormState under ``loss_weighting: gradnorm``, else None.
        input: InputPipeline. The batches of each split.
        validation: Validation. The eval pass.
        checkpoints: LoopCheckpoints. The loop's position (``step``, ``epoch``,
            ``step_in_epoch``, ``best_value``, ``best_epoch``, ``best_step``, also attributes of
            the Trainer) and its checkpoints.
        outputs: the Workdir this process writes to.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        workdir: Workdir,
        strategy: tf.distribute.Strategy | None = None,
    ):
        require_preprocessed(workdir)
        self.spec, self.workdir = spec, workdir
        self.settings = spec.training
        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief, self.task_id = worker_role(self.strategy)
        self.outputs = workdir if self.is_chief else workdir.worker(self.task_id)
        with self.strategy.scope():
            self.models: RankingModels = build_models(spec, workdir)
            self.optimizer = make_optimizer(self.settings)
            self.log_variances = {}
            if self.settings.loss_weighting == UNCERTAINTY:
                self.log_variances = {
                    task.name: keras.Variable(0.0, name=f"log_variance_{task.name}") for task in spec.tasks
                }
            self.gradnorm = GradNormState(spec.task_names) if self.settings.loss_weighting == GRADNORM else None
            self.variables = list(self.models.core.trainable_variables) + list(self.log_variances.values())
            if self.gradnorm is not None:
                self.variables.append(self.gradnorm.logits)
            self.optimizer.build(self.variables)
        self.input = InputPipeline(spec, workdir, self.models.preprocess, self.strategy)
        trained = {"core": self.models.core, "optimizer": self.optimizer, "log_variances": self.log_variances}
        if self.gradnorm is not None:
            trained["gradnorm"] = self.gradnorm.checkpointed()
        self.checkpoints = LoopCheckpoints(self.outputs, trained)
        state = self.checkpoints
        self.step, self.epoch, self.step_in_epoch = state.step, state.epoch, state.step_in_epoch
        self.best_value, self.best_epoch, self.best_step = state.best_value, state.best_epoch, state.best_step
        # XLA compiles the forward and backward pass. In one process (no strategy given) it also
        # compiles the Adam update, as a second cluster: about 1 ms a step at the reference size
        # against about 3 ms of per-variable graph ops (benchmarks/train.py). Under a tf.distribute
        # strategy the update stays in graph mode, where apply_gradients all-reduces the gradients
        # across workers (collectives XLA cannot compile on CPU).
        self._xla_update = self.settings.jit_compile and strategy is None
        self._gates = gate_variables(self.models.core)
        self._stage_functions: dict[str, tuple] = {}
        self._gate_model = None  # core features -> gate weights, for dispatch_dropped
        self.use_stage(stage_of_epoch(self.settings, int(self.epoch)))
        self.steps_per_execution = self.settings.steps_per_execution
        self.validation = Validation(spec, self.models.core, self.input, self.strategy, self.steps_per_execution)

    def dataset(self, split: str, epoch: int = 0, skip_batches: int = 0, cache: bool | None = None) -> tf.data.Dataset:
        """Preprocessed ``(features, labels, sample_weights)`` batches of ``split``: see
        :meth:`mmoe.input_pipeline.InputPipeline.dataset`."""
        return self.input.dataset(split, epoch, skip_batches, cache)

    # ----------------------------------------------------------------------------------------
    # Steps

    def use_stage(self, stage: str) -> None:
        """Trains the variables of ``stage`` (:mod:`mmoe.stages`) from the next step on; each
        stage's compiled step is built once."""
        if stage not in self._stage_functions:
            variables = stage_variables(stage, self.variables, self._gates)

            def loss_and_gradients(features, labels, weights, global_counts):
                return self._loss_and_gradients(features, labels, weights, global_counts, variables)

            def apply_gradients(gradients):
                self._apply_gradients(gradients, variables)

            gradients = tf.function(loss_and_gradients, jit_compile=self.settings.jit_compile)
            update = tf.function(apply_gradients, jit_compile=True) if self._xla_update else apply_gradients

            def step(batch):
                return self._distributed_train_step(batch, gradients, update)

            def steps(iterator, count):
                return self._distributed_train_steps(iterator, count, step)

            self._stage_functions[stage] = (tf.function(step), tf.function(steps), update)
        self.stage = stage
        self._train_fn, self._train_steps_fn, self._apply_update = self._stage_functions[stage]

    def _loss_and_gradients(self, features, labels, weights, global_counts, variables):
        num_replicas = self.strategy.num_replicas_in_sync
        surgery = self.settings.gradient_surgery == PCGRAD
        with tf.GradientTape(persistent=surgery or self.gradnorm is not None) as tape:
            outputs = self.models.core(features, training=True)
            sums = task_loss_sums(self.spec, outputs, labels, weights)
            task_losses = {name: sums[name] / tf.maximum(global_counts[name], 1.0) for name in sums}
            terms = weighted_task_losses(self.spec, task_losses, self.log_variances, num_replicas)
            auxiliary = None
            if self.models.core.losses:  # auxiliary losses, e.g. gate load balancing
                auxiliary = tf.add_n(self.models.core.losses) / num_replicas
            total = tf.add_n(list(terms.values()) + ([auxiliary] if auxiliary is not None else []))
        if not surgery and self.gradnorm is None:
            return total, task_losses, tape.gradient(total, variables)
        # One gradient per task: weighted by GradNorm, projected by PCGrad, then summed.
        model_variables = [v for v in variables if self.gradnorm is None or v is not self.gradnorm.logits]
        task_gradients = [tape.gradient(term, model_variables) for term in terms.values()]
        auxiliary_gradients = tape.gradient(auxiliary, model_variables) if auxiliary is not None else None
        del tape
        task_weights = tf.unstack(self.gradnorm.weights()) if self.gradnorm is not None else [1.0] * len(terms)
        total = tf.add_n([w * term for w, term in zip(task_weights, terms.values())]
                         + ([auxiliary] if auxiliary is not None else []))
        gradients = self._combined(task_gradients, task_weights, auxiliary_gradients, model_variables, surgery)
        if self.gradnorm is None:
            return total, task_losses, gradients
        losses = tf.stack([task_losses[name] for name in self.spec.task_names])
        logits_gradient = gradnorm_logits_gradient(
            self.gradnorm, shared_norms(task_gradients, model_variables), self.gradnorm.loss_ratios(losses),
            self.settings.gradnorm_alpha)
        by_variable = dict(zip(map(id, model_variables), gradients))
        return total, task_losses, [by_variable.get(id(v), logits_gradient) for v in variables]

    @staticmethod
    def _combined(task_gradients, task_weights, auxiliary_gradients, variables, surgery: bool) -> list:
        """``sum_i w_i g_i`` (PCGrad-projected with ``surgery``) plus the auxiliary losses' gradient,
        which is never weighted or projected: it is no task's."""
        scaled = [[add_gradients(None, g, w) for g in gradients] for w, gradients in zip(task_weights, task_gradients)]
        if surgery:
            gradients = project_conflicting(scaled, variables)
        else:
            gradients = [None] * len(variables)
            for task_gradient in scaled:
                gradients = [add_gradients(g, t) for g, t in zip(gradients, task_gradient)]
        if auxiliary_gradients is not None:
            gradients = [add_gradients(g, a) for g, a in zip(gradients, auxiliary_gradients)]
        return gradients

    def _apply_gradients(self, gradients, variables) -> None:
        """Adam on ``variables`` (the stage's part of :attr:`variables`); ``gradients`` in the same
        order (embedding ones IndexedSlices)."""
        self.optimizer.apply_gradients(zip(gradients, variables))

    def _replica_train_step(self, features, labels, weights, gradients, update):
        features, labels, weights = self.input.pad((features, labels, weights))
        context = tf.distribute.get_replica_context()
        counts = {task.name: tf.reduce_sum(weights[task.name]) for task in self.spec.tasks}
        global_counts = context.all_reduce(SUM, counts)
        total, task_losses, grads = gradients(features, labels, weights, global_counts)
        update(grads)
        return {"loss": total, **{f"{name}_loss": value for name, value in task_losses.items()}}

    def _distributed_train_step(self, batch, gradients, update):
        def replica_step(features, labels, weights):
            return self._replica_train_step(features, labels, weights, gradients, update)

        return summed_over_replicas(self.strategy, replica_step, batch)

    def _distributed_train_steps(self, iterator, steps, step):
        """Up to ``steps`` train steps in one tf.while_loop; ``(steps run, sums of the step values)``."""
        sums = {key: tf.constant(0.0) for key in ["loss", *(f"{task.name}_loss" for task in self.spec.tasks)]}
        return summed_steps(step, iterator, steps, sums)

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

    def dispatch_dropped(self) -> float | None:
        """The share of the chosen (row, expert) assignments that the training capacity
        (``model.expert_capacity_factor``) drops, measured on the first eval batch at the
        per-replica batch size; None when the model does not dispatch (no top-k softmax gates
        over one expert bank, or no capacity limit)."""
        config = self.spec.model
        if not (config.gate_type == "softmax" and config.architecture in ("mmoe", "omoe")
                and 0 < config.gate_top_k < config.num_experts and config.expert_capacity_factor > 0):
            return None
        if self._gate_model is None:
            backbone = self.models.core.get_layer(config.architecture)
            gate_weights = [t for t in keras.tree.flatten(backbone.output) if len(t.shape) == 3]  # (batch, T, E)
            self._gate_model = keras.Model(self.models.core.inputs, gate_weights[0])
        features, _, _ = next(iter(self.dataset("eval")))
        rows = self.settings.batch_size // self.strategy.num_replicas_in_sync
        weights = self._gate_model({k: v[:rows] for k, v in features.items()}, training=False)
        gates = 1 if config.architecture == "omoe" else weights.shape[1]  # OMoE repeats its one gate
        return dropped_fraction(weights[:, :gates], config.gate_top_k, config.expert_capacity_factor)

    def evaluate(self) -> dict[str, float]:
        """Eval-split metrics: ``val_<task>_loss``, ``val_<task>_auc`` (binary), ``val_loss``."""
        return self.validation.evaluate()

    # ----------------------------------------------------------------------------------------
    # The loop

    def restore(self) -> bool:
        """Restores the newest checkpoint, if any; returns whether one was found."""
        return self.checkpoints.restore()

    def _keep_if_best(self, epoch: int, logs: dict[str, float]) -> None:
        """Keeps the weights as the best model when ``logs``' early-stopping metric improved."""
        stopping = self.settings.early_stopping
        value = logs[stopping.metric]
        if improved(value, float(self.best_value.numpy()), stopping):
            self.checkpoints.keep_best(self.models.core, epoch, value)
            log.info("epoch %d, step %d: %s improved to %.5f; kept as the best model",
                     epoch + 1, int(self.step), stopping.metric, value)

    def _end_epoch(self, epoch: int, logs: dict[str, float]) -> bool:
        """Keeps the best weights; returns True when early stopping says stop."""
        self._keep_if_best(epoch, logs)
        waited = epoch - int(self.best_epoch)
        stopping = self.settings.early_stopping
        return stopping.patience > 0 and waited >= stopping.patience

    def evaluation_interval(self, steps_per_epoch: int | None) -> int:
        """Steps between the eval passes inside an epoch (``training.evaluations_per_epoch``);
        0 when there are none: one pass per epoch, an epoch's length not known yet (no
        previous epoch and no train row count in ``report.json``), or an epoch too short for a
        pass inside it. Never fewer than ``steps_per_execution``: the compiled loop runs that
        many steps per call, and evaluating more often would cut its calls short (a tiny epoch
        of 10 steps is evaluated at its end only, not after every 3 steps)."""
        per_epoch = self.settings.evaluations_per_epoch
        if per_epoch <= 1:
            return 0
        if steps_per_epoch is None:
            rows = self.input.train_rows()
            steps_per_epoch = -(-rows // self.settings.batch_size) if rows else None
        if not steps_per_epoch:
            return 0
        interval = max(self.steps_per_execution, -(-steps_per_epoch // per_epoch))
        return interval if interval < steps_per_epoch else 0

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
        history = self.checkpoints.load_history() if resumed else {}
        writer = tf.summary.create_file_writer(self.workdir.logs_dir) if self.is_chief else None
        callbacks = list(callbacks)
        for callback in callbacks:
            callback.set_model(self.models.train)
            callback.on_train_begin()
        stop = False
        steps_per_epoch = None
        while int(self.epoch) < epochs and not stop:
            epoch, skip = int(self.epoch), int(self.step_in_epoch)
            self.use_stage(stage_of_epoch(self.settings, epoch))
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            epoch_logs = self._train_epoch(epoch, epochs, skip, steps_per_epoch, verbose)
            steps_per_epoch = skip + epoch_logs.steps
            logs = {**epoch_logs.means(), **self.evaluate()}
            dropped = self.dispatch_dropped()
            if dropped is not None:
                logs["dispatch_dropped"] = dropped
            for task, variable in self.log_variances.items():
                logs[f"{task}_log_variance"] = float(variable.numpy())
            if self.gradnorm is not None:
                for task, weight in zip(self.spec.task_names, self.gradnorm.weights().numpy()):
                    logs[f"{task}_gradnorm_weight"] = float(weight)
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            for key, value in logs.items():
                history.setdefault(key, []).append(float(value))
            stop = self._end_epoch(epoch, logs)
            self.epoch.assign(epoch + 1)
            self.step_in_epoch.assign(0)
            self.checkpoints.save_history(history)
            self.checkpoints.save()
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
        dataset = self.input.distributed("train", epoch, skip)
        progress = keras.utils.Progbar(steps_per_epoch, verbose=1 if verbose >= 2 and self.is_chief else 0)
        if verbose >= 2 and self.is_chief:
            print(f"epoch {epoch + 1}/{epochs}" + (f" (resumed at step {skip})" if skip else ""))
        epoch_logs = EpochLogs()
        every = self.settings.checkpoint_every_steps
        interval = self.evaluation_interval(steps_per_epoch)
        last_eval = interval * (self.settings.evaluations_per_epoch - 1)  # later ones: the epoch's end
        batches = iter(dataset)
        while True:
            steps = self.steps_per_execution
            if every:  # stop on the checkpoint step
                steps = min(steps, every - int(self.step) % every)
            if interval:  # and on the eval step
                steps = min(steps, interval - int(self.step_in_epoch) % interval)
            done, sums = self._run_steps(batches, steps)
            if done:
                self.step_in_epoch.assign_add(done)
                epoch_logs.add(sums, done)
                # Progbar weights each update's values by the steps it covers: pass their means.
                progress.update(skip + epoch_logs.steps, values=[(k, v / done) for k, v in sums.items()])
                at = int(self.step_in_epoch)
                if done == steps and interval and at % interval == 0 and at <= last_eval:
                    self._keep_if_best(epoch, self.evaluate())
                if every and int(self.step) % every == 0:
                    self.checkpoints.save()
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
        if self.checkpoints.restore_best(self.models.core):
            log.info("restored the best epoch (%d, %s %.5f)", int(self.best_epoch) + 1,
                     self.settings.early_stopping.metric, float(self.best_value.numpy()))

    def clear_checkpoints(self) -> None:
        """Removes this run's checkpoints (a finished run is not resumed by the next one)."""
        self.checkpoints.clear()
