"""LazyAdam: Adam on the looked-up rows of embedding tables only."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmoe.optimizers import LazyAdam, unique_rows

ROWS, DIM = 6, 3


def _slices(indices, seed):
    values = np.random.default_rng(seed).normal(size=(len(indices), DIM)).astype(np.float32)
    return tf.IndexedSlices(tf.constant(values), tf.constant(indices, tf.int64), tf.constant([ROWS, DIM], tf.int64))


def _run(optimizer, batches, jit=False, dense=False):
    """Applies one IndexedSlices gradient per batch of indices (``dense``: the same gradient as a
    dense tensor); returns (weights, m, v) as numpy."""
    variable = keras.Variable(np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32))
    optimizer.build([variable])
    for seed, indices in enumerate(batches):
        gradient = _slices(indices, seed)
        gradient = tf.convert_to_tensor(gradient) if dense else gradient
        tf.function(lambda: optimizer.apply_gradients([(gradient, variable)]), jit_compile=jit)()
    return [np.array(x) for x in (variable, optimizer._momentums[0], optimizer._velocities[0])]


def test_unique_rows_sums_repeated_indices_in_a_static_shape():
    rows, summed, valid = unique_rows(tf.constant([4, 1, 4, 0, 1, 4], tf.int64),
                                      tf.constant([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]))
    np.testing.assert_array_equal(valid, [True, True, True, False, False, False])
    np.testing.assert_array_equal(rows, [0, 1, 4, 0, 0, 0])  # distinct rows ascending, then 0
    np.testing.assert_allclose(summed[:, 0], [4.0, 7.0, 10.0, 0.0, 0.0, 0.0])

    rows, summed, valid = unique_rows(tf.zeros([0], tf.int64), tf.zeros([0, 2]))
    assert rows.shape == (0,) and summed.shape == (0, 2) and valid.shape == (0,)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_lazy_adam_is_adam_when_every_row_is_looked_up(jit, amsgrad):
    batches = [[0, 1, 2, 3, 4, 5, 5, 0], [5, 4, 3, 2, 1, 0, 1], [2, 2, 0, 1, 3, 4, 5]]  # repeats sum
    lazy = _run(LazyAdam(learning_rate=0.1, amsgrad=amsgrad), batches, jit=jit)
    dense = _run(keras.optimizers.Adam(learning_rate=0.1, amsgrad=amsgrad), batches, jit=jit, dense=True)
    for got, want in zip(lazy, dense):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_rows_a_batch_does_not_look_up_keep_their_weights_and_moments(jit):
    everything, some = [0, 1, 2, 3, 4, 5], [1, 1, 4]
    before = _run(LazyAdam(learning_rate=0.1), [everything], jit=jit)
    lazy = _run(LazyAdam(learning_rate=0.1), [everything, some], jit=jit)
    dense = _run(keras.optimizers.Adam(learning_rate=0.1), [everything, some], jit=jit, dense=True)
    untouched = [0, 2, 3, 5]
    for got, first in zip(lazy, before):
        np.testing.assert_array_equal(got[untouched], first[untouched])
    assert not np.allclose(dense[0][untouched], before[0][untouched]), "dense Adam moves them on momentum"
    # the looked-up rows get Adam's update of their summed gradient
    np.testing.assert_allclose(lazy[1][[1, 4]], dense[1][[1, 4]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy[0][[1, 4]], dense[0][[1, 4]], rtol=1e-5, atol=1e-6)


def test_tables_below_min_rows_get_adams_dense_update():
    batches = [[0, 1, 2, 3, 4, 5], [1, 1, 4]]
    small = _run(LazyAdam(min_rows=ROWS + 1, learning_rate=0.1), batches)
    dense = _run(keras.optimizers.Adam(learning_rate=0.1), batches, dense=True)
    for got, want in zip(small, dense):  # the fused kernel rounds differently: ~1e-5 of a step
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("min_rows", [0, ROWS + 1], ids=["lazy", "dense"])
def test_repeated_rows_are_summed_before_the_second_moment(min_rows):
    # one row looked up twice, gradients 1 and 2: Adam's v after a step is (1 - beta_2) * 3**2
    gradient = tf.IndexedSlices(tf.constant([[1.0], [2.0]]), tf.constant([0, 0], tf.int64), tf.constant([ROWS, 1], tf.int64))
    ours, keras_adam = LazyAdam(min_rows=min_rows, learning_rate=0.1), keras.optimizers.Adam(learning_rate=0.1)
    for optimizer in (ours, keras_adam):
        variable = keras.Variable(np.zeros((ROWS, 1), np.float32))
        optimizer.build([variable])
        optimizer.apply_gradients([(gradient, variable)])
    assert float(ours._velocities[0][0, 0]) == pytest.approx(0.001 * 9, rel=1e-4)
    assert float(keras_adam._velocities[0][0, 0]) == pytest.approx(0.001 * 5, rel=1e-4), "Keras squares each repeat"


def test_lazy_adam_round_trips_its_config():
    optimizer = LazyAdam(min_rows=123, learning_rate=0.01, beta_1=0.8)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, LazyAdam) and again.min_rows == 123 and again.beta_1 == 0.8
    assert again.get_config() == optimizer.get_config()


@pytest.mark.parametrize("shape", [(3, 2), ()], ids=["matrix", "scalar"])
def test_a_dense_gradient_gets_adams_update(shape):
    variable, reference = keras.Variable(np.ones(shape, np.float32)), keras.Variable(np.ones(shape, np.float32))
    gradient = tf.constant(np.linspace(-1.0, 2.0, int(np.prod(shape))).reshape(shape), tf.float32)
    LazyAdam(learning_rate=0.1).apply_gradients([(gradient, variable)])
    keras.optimizers.Adam(learning_rate=0.1).apply_gradients([(gradient, reference)])
    np.testing.assert_allclose(np.array(variable), np.array(reference), rtol=1e-5, atol=1e-6)


def test_lazy_adam_under_a_distribution_strategy_matches_one_device():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        variable = keras.Variable(np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32))
        optimizer = LazyAdam(learning_rate=0.1)
        optimizer.build([variable])
    batches = [[0, 1, 2, 3, 4, 5], [1, 1, 4]]
    for seed, indices in enumerate(batches):
        gradient = _slices(indices, seed)
        tf.function(lambda: strategy.run(lambda: optimizer.apply_gradients([(gradient, variable)])))()
    alone = _run(LazyAdam(learning_rate=0.1), batches)
    distributed = [np.array(x) for x in (variable, optimizer._momentums[0], optimizer._velocities[0])]
    for got, want in zip(distributed, alone):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def _dense_steps(make_optimizer, steps, jit=False, strategy=None):
    """``steps`` dense gradients applied to a (4, 3) kernel and a (3,) bias by the optimizer
    ``make_optimizer()`` returns; returns the weights and slots."""
    rng = np.random.default_rng(7)
    with strategy.scope() if strategy else tf.init_scope():
        variables = [keras.Variable(rng.normal(size=s).astype(np.float32)) for s in [(4, 3), (3,)]]
        optimizer = make_optimizer()
        optimizer.build(variables)
    for _ in range(steps):
        gradients = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in variables]

        def apply(gradients=gradients):
            optimizer.apply_gradients(zip(gradients, variables))
        call = (lambda: strategy.run(apply)) if strategy else apply
        tf.function(call, jit_compile=jit)()
    return [np.array(x) for x in variables + list(optimizer._momentums) + list(optimizer._velocities)]


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_the_fused_dense_update_follows_keras_adam_over_several_steps(jit, amsgrad):
    ours = _dense_steps(lambda: LazyAdam(learning_rate=0.05, amsgrad=amsgrad), 4, jit=jit)
    keras_adam = _dense_steps(lambda: keras.optimizers.Adam(learning_rate=0.05, amsgrad=amsgrad), 4, jit=jit)
    for got, want in zip(ours, keras_adam):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_fused_dense_update_under_a_distribution_strategy_matches_one_device():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    distributed = _dense_steps(lambda: LazyAdam(learning_rate=0.05), 3, strategy=strategy)
    alone = _dense_steps(lambda: LazyAdam(learning_rate=0.05), 3)
    keras_adam = _dense_steps(lambda: keras.optimizers.Adam(learning_rate=0.05), 3)
    for got, want, reference in zip(distributed, alone, keras_adam):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
