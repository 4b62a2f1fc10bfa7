"""Plots a person would rather look at than numbers: learning curves and gate usage."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def save_figure(figure, path: str) -> str:
    """Writes ``figure`` as a PNG to ``path`` (any tf.io.gfile path), closes it, returns ``path``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def plot_learning_curves(history: dict[str, list[float]], path: str) -> str:
    """One panel per loss (total and per task), train against validation, by epoch."""
    names = [k for k in history if not k.startswith("val_") and k.endswith("loss")]
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        axis.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label="eval")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    return save_figure(figure, path)


def plot_gate_heatmap(gates: dict[str, dict], path: str) -> str:
    """Task x expert heatmap of mean gate weights over the eval set, entropy in the labels."""
    tasks = list(gates)
    weights = np.array([gates[t]["mean_weights"] for t in tasks])
    figure, axis = plt.subplots(figsize=(1.0 + 0.7 * weights.shape[1], 0.9 + 0.6 * len(tasks)))
    image = axis.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(weights.max()), 1e-6), aspect="auto")
    axis.set_xticks(range(weights.shape[1]), [f"e{i}" for i in range(weights.shape[1])])
    axis.set_yticks(range(len(tasks)), [f"{t}\nH={gates[t]['mean_entropy']:.2f}" for t in tasks])
    for (row, col), value in np.ndenumerate(weights):
        axis.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 * weights.max() else "black", fontsize=8)
    axis.set_xlabel("expert")
    axis.set_title("mean gate weight (eval set)")
    figure.colorbar(image, ax=axis)
    return save_figure(figure, path)


def plot_gate_usage(history: list[dict], path: str) -> str:
    """Per task, each expert's mean gate weight by epoch (one line per expert)."""
    tasks = list(history[0])
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.2), squeeze=False)
    epochs = np.arange(1, len(history) + 1)
    for axis, task in zip(axes[0], tasks):
        weights = np.array([epoch[task]["mean_weights"] for epoch in history])  # (epochs, E)
        for expert in range(weights.shape[1]):
            axis.plot(epochs, weights[:, expert], marker=".", label=f"e{expert}")
        entropy = history[-1][task]["mean_entropy"]
        axis.set_title(f"{task}: gate weight per expert (H={entropy:.2f})")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2, loc="upper right")
    return save_figure(figure, path)


def plot_paired_differences(comparison: dict, path: str) -> str:
    """One panel per task: each pair's mean headline-metric improvement with its 95% interval.

    Args:
        comparison: a ``compare.json`` dict (:func:`mmoe.compare.summarize`). Improvements are
            signed so that right of 0 is better (lower RMSE, higher AUC); the dashed line is
            the tolerance within which a model counts as "as good".
    """
    headline = comparison["headline"]
    pairs = list(comparison["paired"])
    figure, axes = plt.subplots(1, len(headline), figsize=(4.5 * len(headline), 0.6 + 0.5 * len(pairs)), squeeze=False)
    for axis, (task, metric) in zip(axes[0], headline.items()):
        rows = [comparison["paired"][pair]["tasks"][task][metric] for pair in pairs]
        means = np.array([r["improvement"]["mean"] for r in rows])
        errors = np.array([[r["improvement"]["mean"] - r["improvement"]["low"],
                            r["improvement"]["high"] - r["improvement"]["mean"]] for r in rows]).T
        y = np.arange(len(pairs))
        axis.errorbar(means, y, xerr=np.nan_to_num(errors), fmt="o", capsize=4)
        axis.axvline(0.0, color="black", linewidth=0.8)
        tolerance = max((r["tolerance"] for r in rows), default=0.0)
        axis.axvline(-tolerance, color="grey", linestyle="--", linewidth=0.8)
        axis.set_yticks(y, pairs if axis is axes[0][0] else [""] * len(pairs))
        axis.invert_yaxis()
        axis.set_title(f"{task}: {metric} improvement (95% CI)")
        axis.grid(alpha=0.3)
    return save_figure(figure, path)
