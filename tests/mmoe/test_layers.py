"""MMoE layers: shapes, gate normalization, hand-computed outputs, serialization, gradients."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from mmoe.layers import MLP, CastToFloat, ExpertBank, Log1p, MMoE, SoftmaxGate

TASKS = ["click", "engagement"]


def _inputs(batch=5, dim=6, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype("float32")


def test_expert_bank_matches_a_loop_of_dense_experts():
    x = _inputs()
    bank = ExpertBank(num_experts=3, units=[4, 2])
    out = keras.ops.convert_to_numpy(bank(x))
    assert out.shape == (5, 3, 2)
    k0, b0, k1, b1 = (keras.ops.convert_to_numpy(w) for w in (bank.kernels[0], bank.biases[0], bank.kernels[1], bank.biases[1]))
    for e in range(3):
        hidden = np.maximum(x @ k0[e] + b0[e], 0)
        np.testing.assert_allclose(out[:, e], np.maximum(hidden @ k1[e] + b1[e], 0), rtol=1e-5, atol=1e-5)
    assert [tuple(w.shape) for w in bank.weights] == [(3, 6, 4), (3, 4), (3, 4, 2), (3, 2)]


def test_expert_kernel_init_has_per_expert_glorot_scale():
    bank = ExpertBank(num_experts=16, units=[64])
    bank.build((None, 64))
    kernel = keras.ops.convert_to_numpy(bank.kernels[0])
    expected_std = np.sqrt(2.0 / (64 + 64))  # Glorot of one [64, 64] expert
    assert abs(kernel.std() / expected_std - 1) < 0.1


def test_gate_with_constant_kernel_is_softmax_by_hand():
    x = np.array([[1.0, 2.0]], dtype="float32")
    gate = SoftmaxGate(num_experts=3, temperature=2.0, kernel_initializer="ones")
    out = keras.ops.convert_to_numpy(gate(x))
    np.testing.assert_allclose(out, np.full((1, 3), 1 / 3), rtol=1e-6)
    gate.kernel.assign(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype="float32"))
    logits = np.array([1.0, 0.0, 2.0]) / 2.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gate(x))[0], np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)


def test_mmoe_shapes_and_gates_sum_to_one():
    layer = MMoE(TASKS, num_experts=4, expert_units=[8, 3])
    mixtures, gates = layer(_inputs())
    assert set(mixtures) == set(TASKS)
    assert all(tuple(m.shape) == (5, 3) for m in mixtures.values())
    gates = keras.ops.convert_to_numpy(gates)
    assert gates.shape == (5, 2, 4)
    assert (gates >= 0).all()
    np.testing.assert_allclose(gates.sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("units", [[3], [5, 3]], ids=["one_layer_stacked", "deep_list"])
def test_mmoe_mixture_is_gate_weighted_sum_of_experts(units):
    x = _inputs()
    layer = MMoE(TASKS, num_experts=4, expert_units=units)
    mixtures, gates = layer(x)
    experts = keras.ops.convert_to_numpy(layer.experts(x))
    gates = keras.ops.convert_to_numpy(gates)
    for t, task in enumerate(TASKS):
        expected = np.einsum("be,beu->bu", gates[:, t], experts)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(mixtures[task]), expected, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_expert_and_every_gate():
    x = tf.constant(_inputs(batch=16))
    layer = MMoE(TASKS, num_experts=4, expert_units=[8])
    with tf.GradientTape() as tape:
        mixtures, _ = layer(x)
        loss = tf.reduce_sum(mixtures["click"] ** 2) + tf.reduce_sum(tf.abs(mixtures["engagement"]))
    grads = tape.gradient(loss, layer.trainable_weights)
    by_name = {w.path: g for w, g in zip(layer.trainable_weights, grads)}
    kernel = next(g for p, g in by_name.items() if p.endswith("experts/kernel_0"))
    per_expert = tf.reduce_sum(tf.abs(kernel), axis=[1, 2]).numpy()
    assert (per_expert > 0).all(), per_expert
    for task in TASKS:
        gate_grad = next(g for p, g in by_name.items() if p.endswith(f"gate_{task}/kernel"))
        assert float(tf.reduce_sum(tf.abs(gate_grad))) > 0


@pytest.mark.parametrize(
    "layer",
    [
        MLP([8, 1], output_activation=None, dropout=0.1),
        ExpertBank(3, [4, 2], activation="tanh"),
        SoftmaxGate(3, temperature=0.5),
        MMoE(TASKS, num_experts=3, expert_units=[4], gate_temperature=2.0),
        Log1p(),
        CastToFloat(),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trip(layer):
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("mmoe>")
    assert type(keras.saving.deserialize_keras_object(serialized)) is type(layer)


def test_model_with_mmoe_saves_and_reloads_as_keras_file(tmp_path):
    inputs = keras.Input(shape=(6,))
    mixtures, gates = MMoE(TASKS, num_experts=3, expert_units=[4], name="mmoe")(inputs)
    outputs = {t: MLP([4, 1], output_activation=None, name=f"tower_{t}")(mixtures[t]) for t in TASKS}
    model = keras.Model(inputs, {**outputs, "gates": gates})
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = _inputs()
    for key, value in model(x).items():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)[key]), keras.ops.convert_to_numpy(value), rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ExpertBank(0, [4]), "`num_experts` must be >= 1, got 0"),
        (lambda: ExpertBank(2, []), "`units` must be a non-empty list"),
        (lambda: SoftmaxGate(2, temperature=0.0), "`temperature` must be > 0, got 0.0"),
        (lambda: MMoE(["a", "a"], 2, [4]), "`task_names` must be non-empty and unique"),
        (lambda: MLP([4], dropout=1.0), "`dropout` must be in [0, 1), got 1.0"),
    ],
)
def test_invalid_arguments_raise_value_error_quoting_the_value(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_log1p_clips_negatives():
    out = keras.ops.convert_to_numpy(Log1p()(np.array([[-3.0], [0.0], [np.e - 1]], dtype="float32")))
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, 1.0], rtol=1e-6)
