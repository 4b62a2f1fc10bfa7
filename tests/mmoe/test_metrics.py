"""Whole-eval-set metrics against brute-force and hand-computed values."""

import itertools

import numpy as np
import pytest

from mmoe.metrics import (
    binary_metrics,
    exact_auc,
    gate_statistics,
    keras_rs_ranking_metrics,
    log_loss,
    ndcg_at_k,
    padded_lists,
    regression_metrics,
)


def _pairwise_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_exact_auc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounding creates many ties
    assert exact_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_auc_edge_cases():
    assert exact_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert exact_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert exact_auc([0, 1], [0.5, 0.5]) == 0.5
    assert np.isnan(exact_auc([1, 1], [0.2, 0.3]))


def test_log_loss_and_calibration():
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    metrics = binary_metrics(np.array([1, 0, 0, 0]), np.array([0.5, 0.5, 0.5, 0.5]))
    assert metrics["calibration"] == pytest.approx(2.0)
    assert metrics["examples"] == 4


def test_regression_metrics_in_named_units():
    metrics = regression_metrics(np.array([1.0, 3.0]), np.array([2.0, 1.0]), unit="seconds")
    assert metrics["rmse_seconds"] == pytest.approx(np.sqrt((1 + 4) / 2))
    assert metrics["mae_seconds"] == pytest.approx(1.5)


def test_ndcg_by_hand():
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.5])
    relevance = np.array([0, 1, 0, 1, 0, 0])
    result = ndcg_at_k(groups, scores, relevance, k=10)
    # a: relevant item at rank 2 -> 1/log2(3); b: relevant at rank 2 -> 1/log2(3); c: no relevant item
    assert result["ndcg@10"] == pytest.approx(1 / np.log2(3))
    assert result["groups"] == 2 and result["groups_total"] == 3
    assert ndcg_at_k(groups, scores, relevance, k=1)["ndcg@1"] == 0.0
    assert ndcg_at_k(groups, -scores, relevance, k=10)["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1) / 2)


def test_gate_statistics():
    weights = np.array([[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.5, 0.5]]])
    stats = gate_statistics(weights, ["click", "engagement"])
    assert stats["click"]["mean_weights"] == [1.0, 0.0]
    assert stats["click"]["mean_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert stats["engagement"]["mean_entropy"] == pytest.approx(np.log(2))


def test_keras_rs_ranking_metrics_agree_with_the_numpy_ndcg_and_a_hand_mrr():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(40), rng.integers(2, 12, size=40))
    scores = rng.random(groups.size)
    relevance = (rng.random(groups.size) < 0.2).astype(float)
    from_keras_rs = keras_rs_ranking_metrics(groups, scores, relevance, k=10)
    assert from_keras_rs["keras_rs_ndcg@10"] == pytest.approx(ndcg_at_k(groups, scores, relevance)["ndcg@10"], abs=1e-5)
    reciprocal_ranks = []
    for group in np.unique(groups):
        rows = groups == group
        if relevance[rows].any():
            ranked = relevance[rows][np.argsort(-scores[rows])]
            reciprocal_ranks.append(1.0 / (np.argmax(ranked > 0) + 1))
    assert from_keras_rs["mrr"] == pytest.approx(np.mean(reciprocal_ranks), abs=1e-5)


def test_padded_lists_keep_each_group_in_input_order():
    labels, scores = padded_lists(np.array(["b", "a", "b"]), np.array([1, 0, 0]), np.array([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(labels, [[0, -1], [1, 0]])
    np.testing.assert_allclose(scores, [[0.2, -1], [0.1, 0.3]])
