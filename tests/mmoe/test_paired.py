"""Paired comparisons over seeds: the t-interval, per-task outcomes and the seesaw verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmoe.paired import (
    BETTER, GAIN, INCONCLUSIVE, NEGATIVE_TRANSFER, NO_LOSS, NOT_WORSE, SEESAW, UNCLEAR, WORSE,
    compare_metric, metric_rule, paired_interval, t_cdf, t_quantile, verdict,
)


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_t_cdf_is_symmetric_and_tends_to_the_normal():
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    assert t_cdf(-1.3, 5) == pytest.approx(1.0 - t_cdf(1.3, 5))
    assert t_cdf(1.96, 10_000) == pytest.approx(0.975, abs=1e-3)


def test_paired_interval_is_the_t_interval_of_the_differences():
    diffs = [0.010, 0.012, 0.008]
    result = paired_interval(diffs)
    half = 4.3027 * np.std(diffs, ddof=1) / math.sqrt(3)
    assert result["mean"] == pytest.approx(0.010)
    assert result["low"] == pytest.approx(0.010 - half, abs=1e-6)
    assert result["high"] == pytest.approx(0.010 + half, abs=1e-6)
    assert result["seeds"] == 3
    single = paired_interval([0.01])
    assert math.isnan(single["low"]) and single["mean"] == pytest.approx(0.01)


def test_outcomes_follow_the_metric_direction_and_tolerance():
    auc, rmse = metric_rule("auc"), metric_rule("rmse_seconds")
    assert auc.higher_is_better and not rmse.higher_is_better
    assert metric_rule("examples") is None and metric_rule("mean_label") is None
    assert metric_rule("gauc_groups") is None and metric_rule("gauc_groups_total") is None
    assert metric_rule("spearman").higher_is_better and metric_rule("long_auc").higher_is_better
    base = np.array([0.70, 0.71, 0.72])
    assert compare_metric(base + [0.010, 0.011, 0.012], base, auc)["outcome"] == BETTER
    assert compare_metric(base - [0.010, 0.011, 0.012], base, auc)["outcome"] == WORSE
    assert compare_metric(base + [0.0002, -0.0001, 0.0001], base, auc)["outcome"] == NOT_WORSE
    assert compare_metric(base + [0.02, -0.02, 0.0], base, auc)["outcome"] == UNCLEAR
    # below 0 throughout, past the tolerance at its lower end: measurably worse, if only a little
    assert compare_metric(base - [0.0008, 0.0009, 0.0010], base, auc)["outcome"] == WORSE
    errors = np.array([50.0, 51.0, 52.0])
    lower = compare_metric(errors - [1.0, 1.1, 0.9], errors, rmse)
    assert lower["outcome"] == BETTER and lower["mean"] == pytest.approx(-1.0)
    assert lower["improvement"]["mean"] == pytest.approx(1.0)
    assert compare_metric(errors + [1.0, 1.1, 0.9], errors, rmse)["outcome"] == WORSE
    # 0.1% of a 51-second RMSE is 0.051 s: 0.02 s worse is still "as good"
    assert compare_metric(errors + [0.02, 0.021, 0.019], errors, rmse)["outcome"] == NOT_WORSE


def test_paired_values_need_the_same_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        compare_metric([0.7, 0.71], [0.7, 0.71, 0.72], metric_rule("auc"))


@pytest.mark.parametrize("outcomes, expected", [
    ({"click": BETTER, "engagement": NOT_WORSE}, GAIN),
    ({"click": NOT_WORSE, "engagement": NOT_WORSE}, NO_LOSS),
    ({"click": WORSE, "engagement": BETTER}, SEESAW),
    ({"click": WORSE, "engagement": NOT_WORSE}, NEGATIVE_TRANSFER),
    ({"click": UNCLEAR, "engagement": BETTER}, INCONCLUSIVE),
])
def test_verdict(outcomes, expected):
    assert verdict(outcomes) == expected
