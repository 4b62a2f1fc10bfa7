"""The calibration-by-decile plot of regression tasks: mean prediction against mean label in each
decile of the prediction (``metrics.json`` -> ``<task>.calibration_by_decile``). A model that
predicts the conditional mean lies on the diagonal; one that predicts the geometric mean (MSE on
log1p) lies below it in every decile.

``mmoe.report`` can call :func:`plot_engagement_calibration` beside its other plots; it writes
nothing when no task has the data.
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from feature_specs.spec import FeatureSpec  # noqa: E402
from mmoe.plots import save_figure  # noqa: E402


def plot_engagement_calibration(spec: FeatureSpec, metrics: dict, path: str) -> str | None:
    """One panel per regression task: its deciles' mean prediction (x) against mean label (y).

    Args:
        spec: FeatureSpec. Its regression tasks (and their units, for the axis labels).
        metrics: a ``metrics.json`` dict (:func:`mmoe.evaluate.compute_metrics`).
        path: str. The PNG written (any tf.io.gfile path).

    Returns:
        ``path``, or None when no regression task has ``calibration_by_decile``.
    """
    tasks = [t for t in spec.tasks if t.kind == "regression" and metrics.get(t.name, {}).get("calibration_by_decile")]
    if not tasks:
        return None
    figure, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        bins = metrics[task.name]["calibration_by_decile"]
        predicted = [b["mean_prediction"] for b in bins]
        observed = [b["mean_label"] for b in bins]
        top = max(predicted + observed) * 1.05
        axis.plot([0, top], [0, top], color="0.7", linestyle="--", label="mean = prediction")
        axis.plot(predicted, observed, marker="o", label=f"deciles ({task.loss})")
        unit = f" ({task.unit})" if task.unit else ""
        axis.set(xlabel=f"mean prediction{unit}", ylabel=f"mean label{unit}", title=task.name, xlim=(0, top), ylim=(0, top))
        axis.legend(fontsize=8)
    return save_figure(figure, path)
