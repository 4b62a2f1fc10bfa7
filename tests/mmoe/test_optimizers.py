"""FusedAdam: the same updates as Keras' Adam, dense and sparse gradients, and a config round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmoe.optimizers import FusedAdam


def _run(optimizer, gradients_per_step, initial):
    variables = [keras.Variable(value) for value in initial]
    optimizer.build(variables)
    for gradients in gradients_per_step:
        optimizer.apply_gradients(zip(gradients, variables))
    return [v.numpy() for v in variables], optimizer


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_adam_matches_keras_adam(sparse):
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    steps = []
    for _ in range(5):
        table = tf.constant(rng.normal(size=(6, 4)).astype("float32"))
        if sparse:  # an embedding gradient: rows 1 and 4, row 4 twice
            table = tf.IndexedSlices(tf.constant(rng.normal(size=(3, 4)).astype("float32")),
                                     tf.constant([1, 4, 4], tf.int64), tf.constant([6, 4], tf.int64))
        steps.append([table, tf.constant(rng.normal(size=(4,)).astype("float32"))])
    expected, _ = _run(keras.optimizers.Adam(0.05), steps, initial)
    got, optimizer = _run(FusedAdam(0.05), steps, initial)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    assert int(optimizer.iterations.numpy()) == 5
    assert not np.allclose(got[0], initial[0])


def test_fused_adam_inside_tf_function_and_config_round_trip():
    variable = keras.Variable(np.ones((3,), "float32"))
    optimizer = FusedAdam(learning_rate=0.1, beta_1=0.8)
    optimizer.build([variable])

    @tf.function
    def step(gradient):
        optimizer.apply_gradients([(gradient, variable)])

    step(tf.constant([1.0, -1.0, 0.0]))
    # first Adam step moves each weight by lr * sign(g) (bias-corrected m / sqrt(v) = sign(g))
    np.testing.assert_allclose(variable.numpy(), [0.9, 1.1, 1.0], rtol=1e-5)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, FusedAdam)
    assert clone.get_config()["beta_1"] == pytest.approx(0.8)
