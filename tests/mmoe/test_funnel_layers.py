"""FunnelLogit, ConditionalProbability and AttentionTransfer: values by hand, shapes, gradients,
get_config and .keras round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmoe.layers.attention_transfer import AttentionTransfer
from mmoe.layers.funnel import ConditionalProbability, FunnelLogit


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_funnel_logit_is_the_logit_of_the_product_and_finite_at_extreme_logits():
    a = np.array([[-3.0], [0.0], [2.5], [40.0], [-40.0]], dtype=np.float32)
    b = np.array([[1.0], [0.0], [-1.5], [40.0], [3.0]], dtype=np.float32)
    out = FunnelLogit()([a, b]).numpy()
    assert out.shape == (5, 1)
    p = _sigmoid(a.astype(np.float64)) * _sigmoid(b.astype(np.float64))
    np.testing.assert_allclose(_sigmoid(out[:3].astype(np.float64)), p[:3], rtol=1e-5)
    assert np.isfinite(out).all()
    assert out[3, 0] > 30  # both near 1: the product is near 1
    np.testing.assert_allclose(out[4, 0], -40.0 + np.log(_sigmoid(3.0)), rtol=1e-4)  # log p ~ log s(a) + log s(b)


def test_funnel_logit_gradients_reach_both_inputs():
    a = tf.Variable([[0.3], [-1.0]])
    b = tf.Variable([[-0.2], [2.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(keras.losses.binary_crossentropy([[1.0], [0.0]], FunnelLogit()([a, b]), from_logits=True))
    grad_a, grad_b = tape.gradient(loss, [a, b])
    assert np.all(np.abs(grad_a.numpy()) > 0) and np.all(np.abs(grad_b.numpy()) > 0)


def test_conditional_probability_divides_and_clips():
    joint = np.array([[0.02], [0.3], [0.0]], dtype=np.float32)
    earlier = np.array([[0.1], [0.2], [0.0]], dtype=np.float32)
    np.testing.assert_allclose(ConditionalProbability()([joint, earlier]).numpy(), [[0.2], [1.0], [0.0]], rtol=1e-6)


def _transfer(initializer="glorot_uniform"):
    layer = AttentionTransfer(kernel_initializer=initializer, name="transfer")
    previous, current = keras.Input((6,)), keras.Input((4,))
    return layer, keras.Model([previous, current], layer([previous, current]))


def test_attention_transfer_by_hand_with_constant_kernels():
    layer = AttentionTransfer(kernel_initializer=keras.initializers.Constant(0.1))
    previous = np.ones((2, 3), dtype=np.float32)
    current = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    out = layer([previous, current]).numpy()
    # info = relu(0.1 * 3) = 0.3 per unit; Q = K = V = 0.1 * sum(u) per unit
    for row, q in enumerate(current):
        u = np.stack([np.full(2, 0.3), q])  # (2, d)
        projected = np.repeat(0.1 * u.sum(axis=1, keepdims=True), 2, axis=1)
        logits = (projected * projected).sum(axis=1) / np.sqrt(2)
        weights = np.exp(logits) / np.exp(logits).sum()
        np.testing.assert_allclose(out[row], weights @ projected, rtol=1e-5)


def test_attention_transfer_shapes_weights_and_gradients():
    layer, model = _transfer()
    previous, current = np.random.default_rng(0).normal(size=(5, 6)), np.random.default_rng(1).normal(size=(5, 4))
    assert model([previous, current]).shape == (5, 4)
    assert sorted(tuple(w.shape) for w in layer.trainable_weights) == [(4,), (4, 4), (4, 4), (4, 4), (6, 4)]
    x = [tf.constant(previous, tf.float32), tf.constant(current, tf.float32)]
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(model(x)))
    grads = tape.gradient(loss, layer.trainable_weights + x)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert np.abs(grads[-2].numpy()).sum() > 0, "the earlier step's representation must receive a gradient"


@pytest.mark.parametrize("make", [
    lambda: FunnelLogit(name="f"), lambda: ConditionalProbability(name="c"), lambda: AttentionTransfer(name="t"),
])
def test_config_round_trip(make):
    layer = make()
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def test_keras_file_round_trip(tmp_path):
    _, model = _transfer()
    a, b = keras.Input((1,)), keras.Input((1,))
    joint = FunnelLogit()([a, b])
    funnel = keras.Model([a, b], [joint, ConditionalProbability()([keras.ops.sigmoid(joint), keras.ops.sigmoid(a)])])
    inputs = [np.random.default_rng(2).normal(size=(3, 6)), np.random.default_rng(3).normal(size=(3, 4))]
    logits = [np.array([[0.5], [-2.0], [1.0]]), np.array([[1.0], [0.1], [-3.0]])]
    for original, data in ((model, inputs), (funnel, logits)):
        path = str(tmp_path / f"{original.name}.keras")
        original.save(path)
        reloaded = keras.models.load_model(path)
        for got, want in zip(keras.tree.flatten(reloaded(data)), keras.tree.flatten(original(data))):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
