"""Training callbacks: gate usage watched epoch by epoch, so collapse onto one expert shows."""

from __future__ import annotations

import keras
import numpy as np

from mmoe.metrics import gate_statistics
from mmoe.model import GATE_WEIGHTS


class GateUsageLogger(keras.callbacks.Callback):
    """Records each task's mean gate weight per expert and gate entropy after every epoch.

    Args:
        serving_model: the serving model (its ``gate_weights`` output is read).
        features: a fixed batch of model features, ``{name: (n, 1)}``, e.g. the first eval batch.
        task_names: tasks in the order of the gate weights' task axis.

    After training, ``history`` holds one ``gate_statistics`` dict per epoch; each epoch's mean
    entropy per task is also put into the epoch logs as ``gate_entropy_<task>``.
    """

    def __init__(self, serving_model, features: dict, task_names):
        super().__init__()
        self.serving_model = serving_model
        self.features = features
        self.task_names = list(task_names)
        self.history: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        weights = np.asarray(self.serving_model(self.features, training=False)[GATE_WEIGHTS])
        stats = gate_statistics(weights, self.task_names)
        self.history.append(stats)
        if logs is not None:
            for task in self.task_names:
                logs[f"gate_entropy_{task}"] = stats[task]["mean_entropy"]
