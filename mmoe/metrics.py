"""Metrics over a whole evaluation set (NumPy; exact, not streamed approximations)."""

from __future__ import annotations

import numpy as np


def exact_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, tied scores sharing their average rank.

    Args:
        labels: ``(n,)`` 0/1. scores: ``(n,)`` float.

    Returns:
        AUC in [0, 1], or NaN when only one class is present.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank shared by each tie group
    ranks = average_rank[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of ``(n,)`` probabilities against ``(n,)`` 0/1 labels."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Mean label, mean prediction, their ratio (``calibration``) and the example count."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    mean_label = float(labels.mean()) if labels.size else float("nan")
    mean_prediction = float(probabilities.mean()) if labels.size else float("nan")
    return {
        "mean_label": mean_label,
        "mean_prediction": mean_prediction,
        "calibration": mean_prediction / mean_label if mean_label > 0 else float("nan"),
        "examples": int(labels.size),
    }


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """AUC, log loss and calibration (mean prediction / mean label) of a binary task."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    return {
        "auc": exact_auc(labels, probabilities),
        "log_loss": log_loss(labels, probabilities) if labels.size else float("nan"),
        **calibration(labels, probabilities),
    }


def regression_metrics(labels: np.ndarray, predictions: np.ndarray, unit: str = "") -> dict:
    """RMSE and MAE in original units (named ``rmse_<unit>``), and the mean label and prediction."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    suffix = f"_{unit}" if unit else ""
    if labels.size == 0:
        return {f"rmse{suffix}": float("nan"), f"mae{suffix}": float("nan"), "examples": 0}
    errors = predictions - labels
    return {
        f"rmse{suffix}": float(np.sqrt(np.mean(errors**2))),
        f"mae{suffix}": float(np.mean(np.abs(errors))),
        "mean_label": float(labels.mean()),
        "mean_prediction": float(predictions.mean()),
        "examples": int(labels.size),
    }


def _positions_within_groups(sorted_groups: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its run of equal (sorted) group codes."""
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    lengths = np.diff(np.r_[starts, sorted_groups.size])
    return np.arange(sorted_groups.size) - np.repeat(starts, lengths)


def ndcg_at_k(groups: np.ndarray, scores: np.ndarray, relevance: np.ndarray, k: int = 10) -> dict:
    """Mean NDCG@k over groups (requests) that hold at least one relevant item.

    Gains are ``2**relevance - 1``, discounts ``log2(rank + 1)``. Ties in score keep input order.

    Args:
        groups: ``(n,)`` request ids (any hashable dtype). scores: ``(n,)``. relevance: ``(n,)`` >= 0.
    """
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    relevance = np.asarray(relevance, dtype=np.float64).ravel()
    num_groups = int(codes.max()) + 1 if codes.size else 0

    def dcg(order):
        positions = _positions_within_groups(codes[order])
        gains = (2.0 ** relevance[order] - 1.0) / np.log2(positions + 2.0) * (positions < k)
        return np.bincount(codes[order], weights=gains, minlength=num_groups)

    actual = dcg(np.lexsort((-scores, codes)))
    ideal = dcg(np.lexsort((-relevance, codes)))
    judged = ideal > 0
    value = float(np.mean(actual[judged] / ideal[judged])) if judged.any() else float("nan")
    return {f"ndcg@{k}": value, "groups": int(judged.sum()), "groups_total": num_groups}


def padded_lists(groups: np.ndarray, *columns: np.ndarray, pad: float = -1.0) -> list[np.ndarray]:
    """Groups rows into one padded list per group: ``(num_groups, longest_group)`` per column.

    Rows keep their input order within a group; padding holds ``pad`` (keras-rs ignores label -1).

    Args:
        groups: ``(n,)`` group ids. columns: ``(n,)`` each.
    """
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    positions = _positions_within_groups(codes[order])
    num_groups = int(codes.max()) + 1 if codes.size else 0
    width = int(positions.max()) + 1 if positions.size else 0
    padded = []
    for column in columns:
        table = np.full((num_groups, width), pad, dtype=np.float32)
        table[codes[order], positions] = np.asarray(column, dtype=np.float32).ravel()[order]
        padded.append(table)
    return padded


def keras_rs_ranking_metrics(groups: np.ndarray, scores: np.ndarray, relevance: np.ndarray, k: int = 10) -> dict:
    """NDCG@k and MRR from ``keras_rs.metrics`` over the groups with at least one relevant item.

    Args:
        groups: ``(n,)`` request ids. scores: ``(n,)``. relevance: ``(n,)`` >= 0 (e.g. clicks).
    """
    import keras_rs

    labels, predictions = padded_lists(groups, relevance, scores)
    judged = (labels > 0).any(axis=1)
    labels, predictions = labels[judged], predictions[judged]
    results = {}
    for name, metric in ((f"keras_rs_ndcg@{k}", keras_rs.metrics.NDCG(k=k)), ("mrr", keras_rs.metrics.MeanReciprocalRank())):
        metric.update_state(labels, predictions)
        results[name] = float(metric.result())
    return results


def gate_statistics(gate_weights: np.ndarray, task_names) -> dict:
    """Mean weight per expert and mean entropy (nats) of each task's gate.

    Args:
        gate_weights: ``(n, num_tasks, num_experts)``, rows summing to 1.
    """
    weights = np.asarray(gate_weights, dtype=np.float64)
    entropy = -np.sum(weights * np.log(np.clip(weights, 1e-12, 1.0)), axis=-1)  # (n, T)
    return {
        task: {
            "mean_weights": [float(w) for w in weights[:, t, :].mean(axis=0)],
            "mean_entropy": float(entropy[:, t].mean()),
            "max_entropy": float(np.log(weights.shape[-1])),
        }
        for t, task in enumerate(task_names)
    }
