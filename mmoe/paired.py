"""Paired comparisons over seeds: the mean difference, its t-interval, and the seesaw verdict.

Two models trained with the same seeds (same initialization seed, same shuffling) give one
difference per seed; the 95% confidence interval of the mean difference is the Student
t-interval over those differences, ``mean ± t(0.975, n-1) · sd / sqrt(n)``. Plain Python and
NumPy (no SciPy): the t quantile is found by bisection on the t distribution's CDF, integrated
with Simpson's rule.

Each metric has a direction and a tolerance (:data:`METRICS`): how much worse than the baseline
still counts as "as good", the issue's bar being -0.001 AUC; for errors (RMSE, MAE, log loss) the
tolerance is the same share, 0.1%, of the baseline's mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricRule:
    """How a metric is compared: its direction and the tolerance within which it is "as good".

    Args:
        prefix: str. Metric keys equal to it or starting with ``<prefix>_`` (``rmse_seconds``).
        higher_is_better: bool.
        tolerance: float. Absolute (``relative`` False) or a share of the baseline mean.
        relative: bool.
    """

    prefix: str
    higher_is_better: bool
    tolerance: float
    relative: bool

    def matches(self, key: str) -> bool:
        return key == self.prefix or key.startswith(self.prefix + "_")

    def slack(self, baseline_mean: float) -> float:
        """The tolerance in the metric's units, for a baseline whose mean is ``baseline_mean``."""
        return self.tolerance * abs(baseline_mean) if self.relative else self.tolerance


METRICS = (
    MetricRule("auc", True, 0.001, relative=False),
    MetricRule("gauc", True, 0.001, relative=False),
    MetricRule("log_loss", False, 0.001, relative=True),
    MetricRule("rmse", False, 0.001, relative=True),
    MetricRule("mae", False, 0.001, relative=True),
    MetricRule("spearman", True, 0.001, relative=False),  # engagement ranked as the ranking uses it
    MetricRule("long_auc", True, 0.001, relative=False),  # AUC of "long" views (mmoe.metrics)
)


COUNT_SUFFIXES = ("_groups", "_groups_total")  # gauc's group counts: named like the metric, not compared


def metric_rule(key: str) -> MetricRule | None:
    """The rule of a metric key, or None for keys that are not compared (counts, means)."""
    if key.endswith(COUNT_SUFFIXES):
        return None
    return next((rule for rule in METRICS if rule.matches(key)), None)


def _t_pdf(x: np.ndarray, df: int) -> np.ndarray:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))


def t_cdf(x: float, df: int, points: int = 4001) -> float:
    """CDF of Student's t with ``df`` degrees of freedom at ``x`` (Simpson's rule from 0)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    grid = np.linspace(0.0, abs(x), points)
    values = _t_pdf(grid, df)
    step = grid[1] - grid[0]
    half = float(step / 3 * (values[0] + values[-1] + 4 * values[1:-1:2].sum() + 2 * values[2:-1:2].sum()))
    return 0.5 + half if x >= 0 else 0.5 - half


def t_quantile(probability: float, df: int) -> float:
    """``q`` with ``t_cdf(q, df) == probability``, for ``probability`` in (0.5, 1)."""
    if not 0.5 < probability < 1.0:
        raise ValueError(f"probability must be in (0.5, 1), got {probability}")
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if t_cdf(middle, df) < probability else (low, middle)
    return 0.5 * (low + high)


def paired_interval(differences, confidence: float = CONFIDENCE) -> dict:
    """Mean of per-seed ``differences`` and its t confidence interval.

    Args:
        differences: ``(seeds,)`` model minus baseline, one per seed.

    Returns:
        ``{"mean", "sd", "low", "high", "seeds"}``; ``low``/``high`` are NaN with fewer than 2 seeds.
    """
    values = np.asarray(differences, dtype=np.float64).ravel()
    n = values.size
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return {"mean": mean, "sd": float("nan"), "low": float("nan"), "high": float("nan"), "seeds": n}
    sd = float(values.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "seeds": n}


# Outcomes of one task's paired comparison, in the metric's better direction:
BETTER = "better"      # the whole interval above 0
NOT_WORSE = "as good"  # the interval's lower end above -tolerance, but not all above 0
WORSE = "worse"        # the whole interval below 0, reaching past -tolerance: measurably worse
UNCLEAR = "unclear"    # the interval reaches past -tolerance and above 0: too wide to say


def compare_metric(model_values, baseline_values, rule: MetricRule, confidence: float = CONFIDENCE) -> dict:
    """Paired comparison of one metric over seeds, signed so that positive is better.

    Args:
        model_values, baseline_values: ``(seeds,)`` each, the same seeds in the same order.
        rule: the metric's MetricRule.

    Returns:
        :func:`paired_interval`'s dict of ``model - baseline`` in the metric's own units (not
        signed), plus ``improvement`` (the interval signed so that positive is better:
        ``{"mean", "low", "high"}``), ``tolerance`` and ``outcome`` (one of ``better``,
        ``as good``, ``worse``, ``unclear``).
    """
    model_values = np.asarray(model_values, dtype=np.float64)
    baseline_values = np.asarray(baseline_values, dtype=np.float64)
    if model_values.shape != baseline_values.shape:
        raise ValueError(f"paired values need the same seeds: {model_values.shape} vs {baseline_values.shape}")
    interval = paired_interval(model_values - baseline_values, confidence)
    sign = 1.0 if rule.higher_is_better else -1.0
    low, high = sorted((sign * interval["low"], sign * interval["high"]))
    improvement = {"mean": sign * interval["mean"], "low": low, "high": high}
    slack = rule.slack(float(baseline_values.mean()))
    if math.isnan(low):
        outcome = UNCLEAR
    elif low > 0:
        outcome = BETTER
    elif low >= -slack:
        outcome = NOT_WORSE
    elif high < 0:
        outcome = WORSE
    else:
        outcome = UNCLEAR
    return {**interval, "improvement": improvement, "tolerance": slack, "outcome": outcome}


# Verdicts of a model against the baseline over all tasks' headline metrics:
GAIN = "gain"                  # as good on every task and better on at least one: what MTL promises
NO_LOSS = "no loss, no gain"   # as good on every task, better on none
SEESAW = "seesaw"              # worse on at least one task while better on another
NEGATIVE_TRANSFER = "worse"    # worse on at least one task, better on none
INCONCLUSIVE = "inconclusive"  # no task worse, but some intervals too wide to say


def verdict(outcomes: dict[str, str]) -> str:
    """One word for a model's per-task outcomes (``{task: outcome}``) against the baseline."""
    values = set(outcomes.values())
    if WORSE in values:
        return SEESAW if BETTER in values else NEGATIVE_TRANSFER
    if UNCLEAR in values:
        return INCONCLUSIVE
    return GAIN if BETTER in values else NO_LOSS
