"""Training: tf.data from the pipeline's TFRecords -> compiled MMoE -> model, history, metrics."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, replace

import keras
import tensorflow as tf

from feature_specs.artifacts import Workdir, join
from feature_specs.spec import FeatureSpec
from mmoe.callbacks import GateUsageLogger
from mmoe.data import training_dataset
from mmoe.evaluate import evaluate
from mmoe.model import GATE_WEIGHTS, RankingModels, build_models, task_losses
from mmoe.plots import plot_gate_heatmap, plot_gate_usage, plot_learning_curves

log = logging.getLogger(__name__)

# tf.data input is shuffled by the pipeline and its length is unknown until the first epoch ends:
# Keras' warnings about both are expected here, not problems.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed", category=UserWarning)
warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)


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
    """Compiles the training model with the spec's losses, loss weights and learning rate."""
    losses, weights = task_losses(spec)
    models.train.compile(
        optimizer=keras.optimizers.Adam(learning_rate=spec.training.learning_rate),
        loss=losses,
        loss_weights=weights,
    )


def train(
    spec: FeatureSpec,
    workdir: Workdir,
    epochs: int | None = None,
    batch_size: int | None = None,
    verbose: int | str = "auto",
) -> TrainResult:
    """Trains on ``data/train``, validates on ``data/eval`` each epoch, evaluates, saves.

    Writes ``model/model.keras`` (the training model), ``model/serving.weights.h5``,
    ``model/spec.json`` (the spec trained with, read by evaluate and export),
    ``model/history.json``, TensorBoard logs under ``model/logs``, plots under ``model/plots``
    and ``metrics.json``.

    Args:
        spec: FeatureSpec. Usually the ``artifacts/spec.json`` the data was made with.
        workdir: Workdir holding ``data/`` and ``artifacts/``.
        epochs: overrides ``spec.training.epochs``.
        batch_size: overrides ``spec.training.batch_size``.
        verbose: Keras ``fit`` verbosity (progress bar per epoch by default).
    """
    settings = replace(
        spec.training,
        epochs=epochs or spec.training.epochs,
        batch_size=batch_size or spec.training.batch_size,
    )
    keras.utils.set_random_seed(settings.seed)
    models = build_models(spec, workdir)
    compile_model(spec, models)
    train_data = training_dataset(spec, workdir, "train", settings.batch_size, shuffle=True, seed=settings.seed)
    eval_data = training_dataset(spec, workdir, "eval", settings.batch_size, shuffle=False)
    tf.io.gfile.makedirs(workdir.plots_dir)
    callbacks = [
        keras.callbacks.TensorBoard(log_dir=workdir.logs_dir, write_graph=False),
        keras.callbacks.ModelCheckpoint(
            join(workdir.model_dir, "checkpoints", "epoch-{epoch:03d}.weights.h5"), save_weights_only=True
        ),
    ]
    gate_logger = None
    if GATE_WEIGHTS in models.serving.output:
        features, _, _ = next(iter(eval_data))
        fixed = {f.name: features[f.name] for f in spec.model_features}
        gate_logger = GateUsageLogger(models.serving, fixed, spec.task_names)
        callbacks.insert(0, gate_logger)
    log.info("training %s for %d epochs, batch %d", spec.name, settings.epochs, settings.batch_size)
    fitted = models.train.fit(
        train_data, validation_data=eval_data, epochs=settings.epochs, callbacks=callbacks, verbose=verbose
    )
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    if gate_logger is not None:
        write_json(join(workdir.model_dir, "gate_usage.json"), gate_logger.history)
        plot_gate_usage(gate_logger.history, join(workdir.plots_dir, "gate_usage.png"))

    models.train.save(workdir.keras_model)
    with tf.io.gfile.GFile(workdir.trained_spec_json, "w") as handle:
        handle.write(spec.to_json())
    models.serving.save_weights(serving_weights_path(workdir))
    write_json(workdir.history_json, history)
    plot_learning_curves(history, join(workdir.plots_dir, "learning_curves.png"))

    metrics = evaluate(spec, workdir, models.serving)
    metrics["training"] = {"epochs": settings.epochs, "batch_size": settings.batch_size,
                           "final_train_loss": history["loss"][-1], "final_eval_loss": history["val_loss"][-1]}
    write_json(workdir.metrics_json, metrics)
    if "gates" in metrics:
        plot_gate_heatmap(metrics["gates"], join(workdir.plots_dir, "gates.png"))
    return TrainResult(spec=spec, models=models, history=history, metrics=metrics)


def serving_weights_path(workdir: Workdir) -> str:
    """Weights of the serving model (shared with the training model), for export."""
    return join(workdir.model_dir, "serving.weights.h5")


def load_trained_models(spec: FeatureSpec, workdir: Workdir) -> RankingModels:
    """Rebuilds the models from spec + artifacts and loads the trained weights."""
    models = build_models(spec, workdir)
    path = serving_weights_path(workdir)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: run `mmoe train --workdir {workdir.root}` first")
    models.serving.load_weights(path)
    return models
