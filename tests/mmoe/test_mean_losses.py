"""The mean losses (ziln, tweedie, poisson): values by hand, their minimizers are the mean, the
served prediction is the mean in original units, and the spec vocabulary matches the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec import LOSSES, MEAN_LOSSES
from mmoe.losses import (
    LOSS_FUNCTIONS,
    PerExampleLoss,
    TWEEDIE_POWER,
    calibration_penalty,
    per_example_loss,
    task_loss,
    ziln_mean,
)


def test_every_spec_loss_is_implemented_and_mean_losses_are_regression():
    assert set(LOSS_FUNCTIONS) == {name for names in LOSSES.values() for name in names}
    assert set(MEAN_LOSSES) <= set(LOSSES["regression"])
    assert task_loss("ziln").output_units == 3 and task_loss("tweedie").output_units == 1


def test_ziln_loss_by_hand():
    labels = np.array([[0.0], [2.0]], dtype=np.float32)
    outputs = np.array([[0.5, 1.0, 0.2], [-0.3, 0.4, 1.5]], dtype=np.float32)
    got = per_example_loss("ziln", labels, outputs).numpy()
    p = 1 / (1 + np.exp(-outputs[:, 0]))
    sigma = np.log1p(np.exp(outputs[:, 2]))
    nll = np.log(2.0) + np.log(sigma[1]) + 0.5 * np.log(2 * np.pi) + (np.log(2.0) - outputs[1, 1]) ** 2 / (2 * sigma[1] ** 2)
    np.testing.assert_allclose(got, [-np.log(1 - p[0]), -np.log(p[1]) + nll], rtol=1e-5)


def test_ziln_mean_and_initial_bias_predict_the_train_mean():
    outputs = np.array([[0.0, 1.0, 0.0]], dtype=np.float32)
    sigma = math.log1p(math.exp(0.0))
    np.testing.assert_allclose(np.asarray(ziln_mean(outputs)), [0.5 * math.exp(1.0 + sigma**2 / 2)], rtol=1e-5)
    for name in ("ziln", "tweedie", "poisson", "mse"):
        bias = np.array([task_loss(name).initial_bias(37.5)], dtype=np.float32)
        np.testing.assert_allclose(np.asarray(task_loss(name).mean(bias)), [37.5], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", ["tweedie", "poisson"])
def test_log_link_losses_are_minimized_at_the_log_of_the_mean(name):
    labels = tf.constant([[0.0], [0.0], [3.0], [30.0]])

    def gradient(value):
        f = tf.Variable(value)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(per_example_loss(name, labels, tf.fill([4, 1], f)))
        return float(tape.gradient(loss, f))

    assert abs(gradient(math.log(8.25))) < 1e-5  # the mean of the labels
    assert gradient(math.log(8.25) - 0.5) < -0.1 and gradient(math.log(8.25) + 0.5) > 0.1


def test_ziln_fit_recovers_the_mean_of_a_zero_inflated_lognormal():
    rng = np.random.default_rng(0)
    y = np.where(rng.random(20000) < 0.3, 0.0, np.exp(rng.normal(2.0, 1.2, 20000))).astype(np.float32)[:, None]
    outputs = tf.Variable([[0.0, 0.0, 0.0]])

    @tf.function
    def steps():
        for _ in tf.range(400):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(per_example_loss("ziln", y, tf.repeat(outputs, y.shape[0], axis=0)))
            outputs.assign_sub(0.2 * tape.gradient(loss, outputs))

    steps()
    np.testing.assert_allclose(float(np.asarray(ziln_mean(outputs.numpy()))[0]), 0.7 * math.exp(2.0 + 1.2**2 / 2), rtol=0.05)
    assert float(np.asarray(ziln_mean(outputs.numpy()))[0]) > 1.5 * float(np.expm1(np.mean(np.log1p(y)))), \
        "the geometric mean (MSE on log1p) is far below"


def test_tweedie_value_by_hand_and_keras_loss_wraps_the_same_function():
    labels, outputs = np.array([[4.0]], np.float32), np.array([[1.0]], np.float32)
    rho = TWEEDIE_POWER
    expected = -4.0 * math.exp((1 - rho)) / (1 - rho) + math.exp(2 - rho) / (2 - rho)
    np.testing.assert_allclose(per_example_loss("tweedie", labels, outputs).numpy(), [expected], rtol=1e-6)
    wrapped = PerExampleLoss("tweedie")
    np.testing.assert_allclose(float(wrapped(labels, outputs)), expected, rtol=1e-6)
    clone = PerExampleLoss.from_config(wrapped.get_config())
    assert clone.loss_name == "tweedie"


def test_calibration_penalty_counts_only_a_later_step_above_the_earlier():
    later = tf.constant([[2.0], [-2.0]])
    earlier = tf.constant([[0.0], [0.0]])
    got = calibration_penalty(later, earlier).numpy()
    np.testing.assert_allclose(got, [1 / (1 + math.exp(-2.0)) - 0.5, 0.0], rtol=1e-6)
