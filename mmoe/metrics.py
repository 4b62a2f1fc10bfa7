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


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``(n,)`` values, tied values sharing their average rank."""
    _, inverse, counts = np.unique(np.asarray(values, dtype=np.float64).ravel(), return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def spearman(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Spearman's rank correlation of ``(n,)`` labels and predictions (ties at average ranks);
    NaN when either is constant or there are fewer than 2 values."""
    x, y = average_ranks(labels), average_ranks(predictions)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


LONG_QUANTILE = 0.8  # "long" engagement: a label above this quantile of the evaluated labels


def long_auc(labels: np.ndarray, predictions: np.ndarray, quantile: float = LONG_QUANTILE) -> dict:
    """How well predictions rank "long" labels (above the labels' ``quantile``) above the rest.

    Args:
        labels, predictions: ``(n,)``. quantile: float in (0, 1).

    Returns:
        ``long_auc`` (:func:`exact_auc` of ``label > threshold``), ``long_threshold``.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if labels.size == 0:
        return {"long_auc": float("nan"), "long_threshold": float("nan")}
    threshold = float(np.quantile(labels, quantile))
    return {"long_auc": exact_auc(labels > threshold, predictions), "long_threshold": threshold}


def calibration_by_decile(labels: np.ndarray, predictions: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean prediction against mean label in ``bins`` equal-count bins of the prediction (the
    data of a calibration plot): a mean predictor lies on the diagonal in every bin.

    Args:
        labels, predictions: ``(n,)``. bins: int >= 1.

    Returns:
        one ``{"mean_prediction", "mean_label", "examples"}`` per non-empty bin, lowest first.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    order = np.argsort(predictions, kind="stable")
    return [
        {"mean_prediction": float(predictions[rows].mean()), "mean_label": float(labels[rows].mean()),
         "examples": int(rows.size)}
        for rows in np.array_split(order, bins) if rows.size
    ]


def grouped_auc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict:
    """Per-group AUC averaged with each group's row count as weight (gAUC, as Zhou et al.'s DIN
    reports it per user), over the groups holding both classes. Ties share average ranks.

    Args:
        groups: ``(n,)`` group ids (e.g. users). labels: ``(n,)`` 0/1. scores: ``(n,)``.

    Returns:
        ``gauc`` (NaN when no group has both classes), ``gauc_groups`` (groups counted),
        ``gauc_groups_total``.
    """
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    total = int(codes.max()) + 1 if codes.size else 0
    order = np.lexsort((scores, codes))
    codes, labels, scores = codes[order], labels[order], scores[order]
    rank = _positions_within_groups(codes) + 1.0  # 1-based rank within the group
    tie_start = np.r_[True, (codes[1:] != codes[:-1]) | (scores[1:] != scores[:-1])]
    tie = np.cumsum(tie_start) - 1
    rank = (np.bincount(tie, weights=rank) / np.bincount(tie))[tie]  # ties share their mean rank
    rows = np.bincount(codes, minlength=total).astype(np.float64)
    positives = np.bincount(codes, weights=labels, minlength=total)
    negatives = rows - positives
    rank_sums = np.bincount(codes, weights=rank * labels, minlength=total)
    both = (positives > 0) & (negatives > 0)
    auc = (rank_sums[both] - positives[both] * (positives[both] + 1) / 2.0) / (positives[both] * negatives[both])
    value = float(np.sum(auc * rows[both]) / np.sum(rows[both])) if both.any() else float("nan")
    return {"gauc": value, "gauc_groups": int(both.sum()), "gauc_groups_total": total}


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
    """RMSE and MAE in original units (named ``rmse_<unit>``), the mean label and prediction,
    and how the predictions serve ranking: ``calibration`` (mean prediction / mean label),
    ``calibration_by_decile``, ``spearman`` and ``long_auc`` (:func:`long_auc`)."""
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
        "calibration": float(predictions.mean() / labels.mean()) if labels.mean() > 0 else float("nan"),
        "calibration_by_decile": calibration_by_decile(labels, predictions),
        "spearman": spearman(labels, predictions),
        **long_auc(labels, predictions),
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
