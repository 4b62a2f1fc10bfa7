"""Gate diagnostics: entropy against uniform, divergence between tasks' gates, dead experts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmoe.gate_diagnostics import (
    gate_diagnostics, jensen_shannon, normalized_entropy, specialisation, summarize_gates, task_divergence,
)

TASKS = ["click", "engagement"]


def test_uniform_gates_do_not_choose():
    weights = np.full((50, 2, 8), 1 / 8)
    result = gate_diagnostics(weights, TASKS)
    for task in TASKS:
        assert result["tasks"][task]["entropy_vs_uniform"]["mean"] == pytest.approx(1.0)
        assert result["tasks"][task]["dead_experts"] == 0
        assert result["tasks"][task]["expert_use"] == [1.0] * 8
    assert result["divergence"]["click|engagement"] == pytest.approx(0.0, abs=1e-12)
    assert result["max_divergence"] == pytest.approx(math.log(2))


def test_one_hot_gates_on_different_experts_diverge_fully_and_leave_the_rest_dead():
    weights = np.zeros((40, 2, 4))
    weights[:20, 0, 0] = weights[20:, 0, 1] = 1.0  # click: expert 0 for half the examples, 1 for the rest
    weights[:, 1, 3] = 1.0  # engagement: always expert 3
    result = gate_diagnostics(weights, TASKS)
    assert result["tasks"]["click"]["entropy_vs_uniform"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert result["tasks"]["click"]["expert_use"] == [0.5, 0.5, 0.0, 0.0]
    assert result["tasks"]["click"]["dead_experts"] == 2
    assert result["tasks"]["engagement"]["dead_experts"] == 3
    assert result["divergence"]["click|engagement"] == pytest.approx(math.log(2))


def test_entropy_percentiles_show_a_gate_sharp_for_some_examples_only():
    weights = np.full((10, 1, 4), 0.25)
    weights[:5, 0] = [1.0, 0.0, 0.0, 0.0]
    entropy = normalized_entropy(weights)[:, 0]
    assert entropy[:5] == pytest.approx(0.0, abs=1e-9) and entropy[5:] == pytest.approx(1.0)
    stats = gate_diagnostics(weights, ["click"])["tasks"]["click"]["entropy_vs_uniform"]
    assert stats["p10"] == pytest.approx(0.0, abs=1e-9) and stats["p90"] == pytest.approx(1.0)
    assert stats["mean"] == pytest.approx(0.5)


def test_jensen_shannon_is_symmetric_and_matches_a_hand_computation():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    m = (p + q) / 2
    kl = lambda a, b: float(np.sum(a * np.log(a / b)))  # noqa: E731
    assert jensen_shannon(p, q) == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m))
    assert jensen_shannon(q, p) == pytest.approx(jensen_shannon(p, q))
    three = np.full((5, 3, 2), 0.5)
    assert list(task_divergence(three, ["a", "b", "c"])) == ["a|b", "a|c", "b|c"]


def test_ple_gates_are_compared_on_the_shared_experts_only():
    # own expert first, then 2 shared: the own columns differ by definition, the shared ones agree
    weights = np.array([[[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]]] * 6)
    assert gate_diagnostics(weights, TASKS)["divergence"]["click|engagement"] > 0.05
    assert gate_diagnostics(weights, TASKS, shared_experts=2)["divergence"]["click|engagement"] == pytest.approx(0.0, abs=1e-12)


def test_a_wrong_shape_names_the_expected_one():
    with pytest.raises(ValueError, match=r"\(n, 2, experts\)"):
        gate_diagnostics(np.ones((4, 8)) / 8, TASKS)


def test_summary_over_seeds_and_its_label():
    uniform = gate_diagnostics(np.full((10, 2, 4), 0.25), TASKS)
    sharp = np.zeros((10, 2, 4))
    sharp[:, 0, 0] = sharp[:, 1, 1] = 1.0
    chosen = gate_diagnostics(sharp, TASKS)
    summary = summarize_gates([uniform, chosen])
    assert summary["tasks"]["click"]["entropy_vs_uniform"] == pytest.approx(0.5)
    assert summary["divergence"]["click|engagement"] == pytest.approx(math.log(2) / 2)
    assert summary["specialisation"] == "specialised" and summary["seeds"] == 2
    assert summarize_gates([uniform])["specialisation"] == "uniform"
    assert specialisation(0.5, 0.001) == "shared mixture"
