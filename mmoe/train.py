"""Training: the pipeline's TFRecords -> :class:`mmoe.loop.Trainer` -> model, history, plots, metrics."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import keras
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec import FeatureSpec
from mmoe.baselines import train_baselines
from mmoe.callbacks import GateUsageLogger
from mmoe.data import training_dataset
from mmoe.evaluate import evaluate
from mmoe.loop import Trainer
from mmoe.model import GATE_WEIGHTS, RankingModels, build_models, task_losses
from mmoe.optimizers import make_optimizer
from mmoe.plots import plot_gate_heatmap, plot_gate_usage, plot_learning_curves
from mmoe.report import write_report

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` produced: the spec trained with, models, per-epoch history, eval metrics."""

    spec: FeatureSpec
    models: RankingModels
    history: dict[str, list[float]]
    metrics: dict


def write_json(path: str, data) -> None:
    """Writes ``data`` as indented JSON to any tf.io.gfile path."""
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def compile_model(spec: FeatureSpec, models: RankingModels) -> None:
    """Compiles ``models.train`` for Keras ``fit`` (fixed loss weights, Keras' own loss averaging).

    The project trains with :class:`mmoe.loop.Trainer`; this is for scripts that want ``fit``'s
    callbacks on one process, such as ``benchmarks/census_income.py``.
    """
    losses, weights = task_losses(spec)
    models.train.compile(
        optimizer=make_optimizer(spec.training),
        loss=losses,
        loss_weights=weights,
    )


def train(
    spec: FeatureSpec,
    workdir: Workdir,
    verbose: int = 2,
    strategy: tf.distribute.Strategy | None = None,
    resume: bool = True,
    baselines: tuple[str, ...] = (),
) -> TrainResult:
    """Trains on ``data/train``, validates on ``data/eval`` each epoch, evaluates, saves.

    Writes ``model/model.keras`` (the training model), ``model/serving.weights.h5``,
    ``model/spec.json`` (the spec trained with, read by evaluate and export),
    ``model/history.json``, ``model/best.weights.h5``, TensorBoard logs under ``model/logs``,
    plots under ``model/plots``, ``model/report.html`` and ``metrics.json``. A run killed midway leaves checkpoints in
    ``model/checkpoints``; the next call resumes from the newest intact one (unless ``resume``
    is False: then they are removed unread). A finished run removes them.

    Args:
        spec: FeatureSpec. Usually the ``artifacts/spec.json`` the data was made with, with any
            command-line overrides already applied (:func:`mmoe.overrides.with_overrides`).
        workdir: Workdir holding ``data/`` and ``artifacts/``.
        verbose: 2: a progress bar per epoch; 1: one line per epoch; 0: silent.
        strategy: a tf.distribute strategy (e.g. MultiWorkerMirroredStrategy); only the chief
            writes the model, metrics and plots.
        resume: continue from ``model/checkpoints`` when there are any.
        baselines: architectures (e.g. ``single_task``, ``shared_bottom``) to train afterwards on
            the same data; their eval metrics go into ``metrics.json["baselines"]`` and the report.

    Raises:
        mmoe.data.UnfinishedPreprocessError: ``workdir``'s last preprocess did not complete
            (its ``report.json`` is missing or records a failed check).
        mmoe.checkpoints.CheckpointMismatchError: resuming from a checkpoint of another model.
    """
    settings = spec.training
    keras.utils.set_random_seed(settings.seed)
    trainer = Trainer(spec, workdir, strategy=strategy)
    if not resume:
        trainer.clear_checkpoints()
    models = trainer.models
    callbacks, gate_logger = [], None
    if GATE_WEIGHTS in models.serving.output:
        features, _, _ = next(iter(training_dataset(spec, workdir, "eval", settings.batch_size, shuffle=False)))
        fixed = {f.name: features[f.name] for f in spec.model_features}
        gate_logger = GateUsageLogger(models.serving, fixed, spec.task_names)
        callbacks.append(gate_logger)
    log.info("training %s for %d epochs, batch %d", spec.name, settings.epochs, settings.batch_size)
    history = trainer.fit(settings.epochs, callbacks=callbacks, verbose=verbose)
    if not trainer.is_chief:
        models.serving.save_weights(trainer.outputs.serving_weights)
        trainer.clear_checkpoints()
        return TrainResult(spec=spec, models=models, history=history, metrics={})

    tf.io.gfile.makedirs(workdir.plots_dir)
    if gate_logger is not None and gate_logger.history:  # empty when resumed after the last epoch
        write_json(workdir.gate_usage_json, gate_logger.history)
        plot_gate_usage(gate_logger.history, workdir.gate_usage_png)
    models.train.save(workdir.keras_model)
    with tf.io.gfile.GFile(workdir.trained_spec_json, "w") as handle:
        handle.write(spec.to_json())
    models.serving.save_weights(workdir.serving_weights)
    write_json(workdir.history_json, history)
    plot_learning_curves(history, workdir.learning_curves_png)

    metrics = evaluate(spec, workdir, models.serving)
    best_epoch = int(trainer.best_epoch)
    metrics["training"] = {
        "epochs": len(history["loss"]), "batch_size": settings.batch_size,
        "final_train_loss": history["loss"][-1], "final_eval_loss": history["val_loss"][-1],
        "best_epoch": best_epoch + 1, "best_step": int(trainer.best_step),
        "early_stopping_metric": settings.early_stopping.metric, "best_value": float(trainer.best_value.numpy()),
        "loss_weighting": settings.loss_weighting,
    }
    if "gates" in metrics:
        plot_gate_heatmap(metrics["gates"], workdir.gates_png)
    trainer.clear_checkpoints()
    if baselines:
        metrics["baselines"] = train_baselines(spec, workdir, baselines, verbose=min(verbose, 1))
    write_json(workdir.metrics_json, metrics)
    log.info("report: %s", write_report(spec, workdir, history, metrics))
    return TrainResult(spec=spec, models=models, history=history, metrics=metrics)


def load_trained_models(spec: FeatureSpec, workdir: Workdir) -> RankingModels:
    """Rebuilds the models from spec + artifacts and loads the trained weights."""
    models = build_models(spec, workdir)
    path = workdir.serving_weights
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: run `mmoe train --workdir {workdir.root}` first")
    models.serving.load_weights(path)
    return models
