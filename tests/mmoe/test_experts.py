"""ExpertBank: the fused (stacked-kernel) and naive (loop of Dense layers) forms are one function."""

from dataclasses import replace

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec_reader import bundled_spec_path, load_spec
from mmoe.architectures import build_backbone
from mmoe.layers import PLE, ExpertBank, MMoE
from mmoe.layers.mixture import mix, pool

TASKS = ["click", "engagement"]


def _inputs(batch=7, dim=6, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _pair(units, num_experts=4, dim=6, activation="relu"):
    """A fused and a naive bank with identical weights (random biases, so biases are checked too)."""
    fused = ExpertBank(num_experts, units, activation=activation, bias_initializer="random_normal")
    naive = ExpertBank(num_experts, units, activation=activation, fused=False)
    fused.build((None, dim))
    naive.build((None, dim))
    naive.set_expert_weights(fused.expert_weights())
    return fused, naive


@pytest.mark.parametrize("units", [[5], [5, 3], [8, 4, 2]], ids=lambda u: "x".join(map(str, u)))
def test_naive_and_fused_banks_compute_the_same_function(units):
    fused, naive = _pair(units)
    x = _inputs()
    out = _np(fused(x))
    assert out.shape == (7, 4, units[-1])
    np.testing.assert_allclose(_np(naive(x)), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "units,fused,as_list", [([5], True, False), ([5, 3], True, True), ([5], False, True)],
    ids=["one_layer_fused", "deep_fused", "naive"],
)
def test_expert_outputs_are_those_of_call_in_the_form_they_are_computed(units, fused, as_list):
    bank = ExpertBank(4, units, fused=fused, bias_initializer="random_normal")
    bank.build((None, 6))
    x = _inputs()
    outputs = bank.expert_outputs(x)
    assert isinstance(outputs, list) == as_list
    stacked = np.stack([_np(h) for h in outputs], axis=1) if as_list else _np(outputs)
    assert stacked.shape == (7, 4, units[-1])
    np.testing.assert_allclose(stacked, _np(bank(x)), rtol=1e-6, atol=1e-6)


def test_mix_sums_a_list_of_experts_as_it_would_their_stack():
    rng = np.random.default_rng(3)
    weights = tf.nn.softmax(rng.normal(size=(7, 4)).astype("float32"))
    experts = [tf.constant(rng.normal(size=(7, 3)).astype("float32")) for _ in range(4)]
    stacked = tf.stack(experts, axis=1)  # (7, 4, 3)
    expected = np.einsum("be,beu->bu", _np(weights), _np(stacked))
    np.testing.assert_allclose(_np(mix(weights, experts)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(mix(weights, stacked)), expected, rtol=1e-5, atol=1e-6)
    # pools: lists stay lists (in order); a stacked bank makes the pool one stacked tensor
    pooled = pool(experts[:1], experts[1:])
    assert len(pooled) == 4 and all(a is b for a, b in zip(pooled, experts))
    mixed = pool(experts[:1], stacked[:, 1:])
    np.testing.assert_allclose(_np(mixed), _np(stacked), rtol=0, atol=0)


def test_fused_bank_matches_per_expert_numpy_mlps():
    fused, _ = _pair([5, 3], activation="tanh")
    x = _inputs()
    (k0, b0), (k1, b1) = fused.expert_weights()
    out = _np(fused(x))
    for e in range(4):
        np.testing.assert_allclose(out[:, e], np.tanh(np.tanh(x @ k0[e] + b0[e]) @ k1[e] + b1[e]), rtol=1e-5, atol=1e-6)


def test_naive_bank_is_a_loop_of_dense_layers_with_per_expert_shapes():
    _, naive = _pair([5, 3])
    assert len(naive.dense_layers) == 4 * 2
    assert all(isinstance(layer, keras.layers.Dense) for layer in naive.dense_layers)
    assert [tuple(w.shape) for w in naive.expert_dense(2, 0).weights] == [(6, 5), (5,)]
    assert [tuple(w.shape) for w in naive.expert_dense(2, 1).weights] == [(5, 3), (3,)]
    assert len(naive.trainable_weights) == 4 * 2 * 2


def test_fused_bank_keeps_its_stacked_weight_shapes():
    fused, _ = _pair([5, 3])
    assert [(w.path.split("/")[-1], tuple(w.shape)) for w in fused.weights] == [
        ("kernel_0", (4, 6, 5)), ("bias_0", (4, 5)), ("kernel_1", (4, 5, 3)), ("bias_1", (4, 3)),
    ]


def test_both_forms_initialize_each_expert_with_glorot_scale():
    expected_std = np.sqrt(2.0 / (64 + 64))  # Glorot uniform of one [64, 64] kernel
    for fused in (True, False):
        bank = ExpertBank(16, [64], fused=fused)
        bank.build((None, 64))
        kernel = bank.expert_weights()[0][0]
        assert kernel.shape == (16, 64, 64)
        assert abs(kernel.std() / expected_std - 1) < 0.1, (fused, kernel.std())


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
def test_gradients_reach_every_expert_and_every_layer(fused):
    bank = ExpertBank(4, [5, 3], fused=fused)
    x = tf.constant(_inputs(batch=32))
    with tf.GradientTape() as tape:
        # weight expert e by e + 1 so a mix-up of experts would change the gradient pattern
        loss = tf.reduce_sum(bank(x) * tf.reshape(tf.range(1.0, 5.0), (1, 4, 1)))
    grads = tape.gradient(loss, bank.trainable_weights)
    assert all(g is not None for g in grads)
    if fused:
        per_expert = [np.abs(_np(g)).sum(axis=tuple(range(1, g.shape.rank))) for g in grads]
    else:
        per_expert = [
            np.array([np.abs(_np(grads[(e * 2 + i) * 2 + j])).sum() for e in range(4)])
            for i in range(2) for j in range(2)
        ]
    for values in per_expert:
        assert values.shape == (4,)
        assert (values > 0).all(), values


def test_fused_and_naive_gradients_agree():
    fused, naive = _pair([5, 3])
    x = tf.constant(_inputs(batch=16))
    grads = {}
    for name, bank in (("fused", fused), ("naive", naive)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(bank(x)))
        grads[name] = _np(tape.gradient(loss, x))
    np.testing.assert_allclose(grads["naive"], grads["fused"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
def test_get_config_round_trip_and_keras_file(fused, tmp_path):
    bank = ExpertBank(3, [4, 2], activation="tanh", fused=fused, name="experts")
    config = bank.get_config()
    assert config["fused"] is fused and config["kernel_initializer"] is None
    restored = ExpertBank.from_config(config)
    assert restored.get_config() == config
    inputs = keras.Input(shape=(6,))
    model = keras.Model(inputs, bank(inputs))
    path = str(tmp_path / "experts.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.get_layer("experts").fused is fused
    x = _inputs()
    np.testing.assert_allclose(_np(reloaded(x)), _np(model(x)), rtol=1e-6)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
def test_mmoe_and_ple_pass_fused_experts_to_their_banks(fused):
    mmoe = MMoE(TASKS, num_experts=3, expert_units=[4], fused_experts=fused)
    ple = PLE(TASKS, num_levels=2, num_experts=2, task_experts=1, expert_units=[4], fused_experts=fused)
    banks = [mmoe.experts] + [b for level in ple.levels for b in (level.shared_experts, *level.own_experts)]
    assert all(bank.fused is fused for bank in banks)
    assert MMoE.from_config(mmoe.get_config()).experts.fused is fused
    assert PLE.from_config(ple.get_config()).levels[1].shared_experts.fused is fused
    mixtures, gates = mmoe(_inputs())
    assert _np(gates).shape == (7, 2, 3) and _np(mixtures["click"]).shape == (7, 4)


@pytest.mark.parametrize("architecture", ["mmoe", "omoe", "cgc", "ple"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
def test_spec_fused_experts_selects_the_bank(architecture, fused):
    spec = load_spec(bundled_spec_path("clicklog"))
    spec = replace(spec, model=replace(spec.model, architecture=architecture, fused_experts=fused, num_levels=2))
    inputs = keras.Input(shape=(6,))
    mixtures, _ = build_backbone(spec, lambda prefix: inputs)
    layer = keras.Model(inputs, mixtures).get_layer(architecture)
    banks = [layer.experts] if architecture in ("mmoe", "omoe") else [level.shared_experts for level in layer.levels]
    assert all(bank.fused is fused for bank in banks)
