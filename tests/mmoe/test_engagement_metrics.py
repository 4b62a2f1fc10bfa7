"""Metrics that judge engagement as ranking uses it, and per-user AUC: against plain loops."""

from __future__ import annotations

import numpy as np

from mmoe.metrics import (
    average_ranks,
    calibration_by_decile,
    exact_auc,
    grouped_auc,
    long_auc,
    regression_metrics,
    spearman,
)


def test_average_ranks_and_spearman():
    np.testing.assert_allclose(average_ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == 1.0  # a rank metric: outliers change nothing
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    x = np.array([1.0, 2.0, 2.0, 5.0, 7.0])
    y = np.array([0.5, 0.1, 0.3, 0.9, 0.8])
    rx, ry = average_ranks(x), average_ranks(y)
    np.testing.assert_allclose(spearman(x, y), np.corrcoef(rx, ry)[0, 1])


def test_long_auc_ranks_labels_above_the_quantile():
    labels = np.arange(10.0)
    result = long_auc(labels, labels[::-1], quantile=0.8)  # reversed: the long ones scored lowest
    assert result["long_threshold"] == np.quantile(labels, 0.8)
    assert result["long_auc"] == 0.0
    assert long_auc(labels, labels)["long_auc"] == 1.0


def test_calibration_by_decile_bins_by_prediction():
    predictions = np.arange(100.0)
    labels = 2 * predictions
    bins = calibration_by_decile(labels, predictions)
    assert len(bins) == 10 and all(b["examples"] == 10 for b in bins)
    assert bins[0]["mean_prediction"] == 4.5 and bins[0]["mean_label"] == 9.0
    assert bins[-1]["mean_prediction"] == 94.5
    assert len(calibration_by_decile(labels[:3], predictions[:3])) == 3  # fewer rows than bins: no empty bins


def test_regression_metrics_keep_their_keys_and_add_the_ranking_ones():
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0, 10.0]), np.array([2.0, 2.0, 4.0, 8.0]), "seconds")
    assert {"rmse_seconds", "mae_seconds", "mean_label", "mean_prediction", "examples"} <= set(metrics)
    assert metrics["calibration"] == 16.0 / 16.0
    assert metrics["spearman"] > 0.9 and len(metrics["calibration_by_decile"]) == 4


def _loop_gauc(users, labels, scores):
    total = weights = 0.0
    for user in np.unique(users):
        rows = users == user
        if labels[rows].min() != labels[rows].max():
            total += rows.sum() * exact_auc(labels[rows], scores[rows])
            weights += rows.sum()
    return total / weights


def test_grouped_auc_equals_a_loop_over_users_with_ties():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 2000).astype(str)
    labels = (rng.random(2000) < 0.2).astype(float)
    scores = np.round(rng.random(2000) + 0.3 * labels, 1)  # many ties within users
    result = grouped_auc(users, labels, scores)
    np.testing.assert_allclose(result["gauc"], _loop_gauc(users, labels, scores), rtol=1e-12)
    assert result["gauc_groups_total"] == 30


def test_grouped_auc_skips_users_with_one_class():
    users = np.array(["a", "a", "b", "b", "c"])
    labels = np.array([1, 0, 0, 0, 1])
    result = grouped_auc(users, labels, np.array([0.9, 0.1, 0.5, 0.4, 0.3]))
    assert result == {"gauc": 1.0, "gauc_groups": 1, "gauc_groups_total": 3}
    assert np.isnan(grouped_auc(users[2:4], labels[2:4], np.array([0.1, 0.2]))["gauc"])


def test_calibration_plot_is_written_for_regression_tasks_only(tmp_path):
    from feature_specs.spec_reader import bundled_spec_path, load_spec
    from mmoe.calibration_plot import plot_engagement_calibration

    spec = load_spec(bundled_spec_path("clicklog"))
    labels = np.random.default_rng(0).lognormal(3.0, 1.0, 500)
    metrics = {"click": {"auc": 0.7}, "engagement": regression_metrics(labels, labels * 0.9, "seconds")}
    path = plot_engagement_calibration(spec, metrics, str(tmp_path / "calibration.png"))
    assert path and (tmp_path / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_engagement_calibration(spec, {"click": {"auc": 0.7}}, str(tmp_path / "none.png")) is None
    assert not (tmp_path / "none.png").exists()
