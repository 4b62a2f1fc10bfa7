"""Baselines trained beside the main model on the same data: does the multi-task model help?

Each baseline is the same spec with another architecture (``single_task``: one network per task,
embeddings included; ``shared_bottom``: one shared MLP), trained by the same loop with the same
seed and settings, evaluated by the same code. Outputs go to ``model/baselines/<architecture>/``
(``Workdir.baseline``).
"""

from __future__ import annotations

import logging

from feature_specs.artifacts import Workdir
from feature_specs.spec import FeatureSpec
from mmoe.overrides import with_overrides

log = logging.getLogger(__name__)

# The baselines ``mmoe train --baselines`` trains. This module imports TensorFlow and Keras only
# inside its functions, so the CLI can read this without starting them.
DEFAULT_BASELINES = ("single_task", "shared_bottom")


def train_baseline(spec: FeatureSpec, workdir: Workdir, architecture: str, verbose: int = 1) -> dict:
    """Trains ``spec`` with ``architecture`` instead of its own; returns its eval metrics.

    Args:
        spec: FeatureSpec of the main model (its training settings are kept).
        workdir: the main run's Workdir.
        architecture: a registered architecture, e.g. ``single_task``.
    """
    import keras

    from mmoe.evaluate import evaluate
    from mmoe.loop import Trainer

    spec = with_overrides(spec, architecture=architecture)
    keras.utils.set_random_seed(spec.training.seed)
    trainer = Trainer(spec, workdir.baseline(architecture))
    trainer.clear_checkpoints()
    log.info("baseline %s: training %d epochs", architecture, spec.training.epochs)
    history = trainer.fit(callbacks=(), verbose=verbose)
    trainer.clear_checkpoints()
    metrics = evaluate(spec, workdir, trainer.models.serving)
    metrics["training"] = {"epochs": len(history["loss"]), "best_epoch": int(trainer.best_epoch) + 1}
    return metrics


def train_baselines(spec: FeatureSpec, workdir: Workdir, architectures=DEFAULT_BASELINES, verbose: int = 1) -> dict:
    """``{architecture: eval metrics}`` for each baseline other than the main architecture."""
    return {
        architecture: train_baseline(spec, workdir, architecture, verbose)
        for architecture in architectures
        if architecture != spec.model.architecture
    }
