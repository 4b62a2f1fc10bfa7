"""The paper's synthetic correlation data: weights, determinism, correlation ordering."""

import numpy as np
import pytest

from data_sets.correlation import CorrelationDataConfig, make_correlated_tasks, make_task_weights


@pytest.mark.parametrize("p", [1.0, 0.9, 0.5, 0.0])
def test_task_weights_have_the_requested_cosine(p):
    w1, w2 = make_task_weights(p, np.random.default_rng(0), CorrelationDataConfig())
    assert np.linalg.norm(w1) == pytest.approx(1.0) and np.linalg.norm(w2) == pytest.approx(1.0)
    assert float(w1 @ w2) == pytest.approx(p, abs=1e-9)


def test_labels_follow_the_formula_and_are_deterministic():
    x, y1, y2 = make_correlated_tasks(2000, 0.5, seed=3)
    again = make_correlated_tasks(2000, 0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((x, y1, y2), again))
    assert x.shape == (2000, 100) and y1.shape == (2000,)
    assert not np.array_equal(y1, make_correlated_tasks(2000, 0.5, seed=4)[1])


def test_label_correlation_falls_with_p():
    corr = [np.corrcoef(*make_correlated_tasks(20000, p, seed=1)[1:])[0, 1] for p in (1.0, 0.8, 0.5)]
    assert corr[0] > 0.99 and corr[0] > corr[1] > corr[2]


def test_rejects_bad_correlation():
    with pytest.raises(ValueError, match="got 1.5"):
        make_task_weights(1.5, np.random.default_rng(0), CorrelationDataConfig())
