"""The MMoE family's layers: OMoE, CGC, PLE and the gate options."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from mmoe.layers import CGC, PLE, MMoE, OMoE, SoftmaxGate
from mmoe.layers.gate import load_balance_loss

TASKS = ["click", "engagement"]


def _x(batch=8, dim=6, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_omoe_gives_every_task_the_same_mixture():
    mixtures, gates = OMoE(TASKS, num_experts=3, expert_units=[4])(_x())
    np.testing.assert_allclose(_np(mixtures["click"]), _np(mixtures["engagement"]))
    gates = _np(gates)
    assert gates.shape == (8, 2, 3)
    np.testing.assert_allclose(gates[:, 0], gates[:, 1])


def test_cgc_gates_cover_own_then_shared_experts():
    layer = CGC(TASKS, num_experts=3, task_experts=2, expert_units=[4])
    mixtures, gates = layer(_x())
    assert set(mixtures) == set(TASKS)
    assert _np(gates).shape == (8, 2, 5)
    np.testing.assert_allclose(_np(gates).sum(-1), 1.0, rtol=1e-6)
    x = _x()
    own = _np(layer.own_experts[0](x))
    shared = _np(layer.shared_experts(x))
    weights = _np(layer.gates[0](x))
    expected = np.einsum("be,beu->bu", weights, np.concatenate([own, shared], axis=1))
    np.testing.assert_allclose(_np(layer(x)[0]["click"]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("top_k", [0, 3])
def test_cgc_transfer_mixes_other_tasks_experts_without_training_them(top_k):
    """STEM's all-forward, task-specific-backward: click's gate weighs engagement's experts too,
    and click's mixture sends no gradient into them; dense also with top-k."""
    layer = CGC(TASKS, num_experts=3, task_experts=2, expert_units=[4], transfer_experts=True, gate_top_k=top_k)
    inputs = {"click": _x(seed=1), "engagement": _x(seed=2), "shared": _x(seed=3)}
    mixtures, gates = layer(inputs)
    assert _np(gates).shape == (8, 2, 2 + 2 + 3)  # own, the other task's, shared
    own, other = (_np(layer.own_experts[i](inputs[t])) for i, t in enumerate(TASKS))
    shared = _np(layer.shared_experts(inputs["shared"]))
    weights = _np(layer.gates[0](inputs["click"]))
    expected = np.einsum("be,beu->bu", weights, np.concatenate([own, other, shared], axis=1))
    np.testing.assert_allclose(_np(mixtures["click"]), expected, rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        click = tf.reduce_sum(layer(inputs)[0]["click"])
    variables = {"own": layer.own_experts[0].trainable_variables, "other": layer.own_experts[1].trainable_variables,
                 "shared": layer.shared_experts.trainable_variables}
    grads = tape.gradient(click, variables)
    assert all(g is None for g in grads["other"]), "engagement's experts get no gradient from click"
    assert all(g is not None and np.abs(_np(g)).sum() > 0 for g in grads["own"] + grads["shared"])


def test_cgc_with_shared_output_feeds_the_next_level():
    mixtures, _ = CGC(TASKS, num_experts=2, task_experts=1, expert_units=[4], output_shared=True)(_x())
    assert set(mixtures) == {"click", "engagement", "shared"}


def test_ple_stacks_levels_and_gradients_reach_the_first_level():
    layer = PLE(TASKS, num_levels=2, num_experts=2, task_experts=1, expert_units=[5])
    x = tf.constant(_x())
    with tf.GradientTape() as tape:
        mixtures, gates = layer(x)
        loss = sum(tf.reduce_sum(m**2) for m in mixtures.values())
    assert tuple(gates.shape) == (8, 2, 3)
    assert set(mixtures) == set(TASKS)
    grads = dict(zip((w.path for w in layer.trainable_weights), tape.gradient(loss, layer.trainable_weights)))
    first_level = [g for p, g in grads.items() if "level_0" in p and "kernel" in p]
    assert first_level and all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in first_level)


def test_top_k_gate_keeps_exactly_k_experts():
    gate = SoftmaxGate(8, top_k=2)
    weights = _np(gate(_x(batch=32)))
    assert ((weights > 0).sum(axis=-1) == 2).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def test_expert_dropout_drops_in_training_only_and_renormalizes():
    gate = SoftmaxGate(8, expert_dropout=0.5, seed=3)
    x = _x(batch=64)
    trained = _np(gate(x, training=True))
    assert (trained == 0).mean() > 0.25
    np.testing.assert_allclose(trained.sum(-1), 1.0, rtol=1e-6)
    assert (_np(gate(x, training=False)) > 0).all()


def test_gate_mlp_adds_hidden_layers():
    gate = SoftmaxGate(4, hidden_units=[16, 8])
    gate(_x())
    assert sorted(tuple(w.shape) for w in gate.weights if "kernel" in w.path) == [(6, 16), (8, 4), (16, 8)]


def test_load_balance_loss_bounds_and_is_added_in_training_only():
    assert float(load_balance_loss(np.full((4, 5), 0.2, "float32"))) == pytest.approx(1.0)
    assert float(load_balance_loss(np.eye(5, dtype="float32")[[0, 0, 0]])) == pytest.approx(5.0)
    layer = MMoE(TASKS, num_experts=4, expert_units=[3], load_balance_weight=0.1)
    layer(_x(), training=False)
    assert len(layer.losses) == 0
    layer(_x(), training=True)
    assert len(layer.losses) == 2  # one per gate
    assert all(0.1 <= float(loss) <= 0.4 + 1e-6 for loss in layer.losses)


@pytest.mark.parametrize(
    "layer",
    [
        OMoE(TASKS, num_experts=3, expert_units=[4]),
        MMoE(TASKS, 4, [4], gate_units=[8], gate_top_k=2, expert_dropout=0.1, load_balance_weight=0.01, seed=1),
        CGC(TASKS, num_experts=2, task_experts=1, expert_units=[4], output_shared=True),
        CGC(TASKS, num_experts=2, task_experts=1, expert_units=[4], transfer_experts=True),
        PLE(TASKS, num_levels=2, num_experts=2, task_experts=2, expert_units=[4], gate_temperature=2.0),
        SoftmaxGate(4, hidden_units=[3], top_k=2, expert_dropout=0.2, seed=5),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trip_and_keras_file(layer, tmp_path):
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    inputs = keras.Input(shape=(6,))
    out = layer(inputs)
    outputs = out[1] if isinstance(out, tuple) else out
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = _x()
    np.testing.assert_allclose(_np(keras.models.load_model(path)(x)), _np(model(x)), rtol=1e-6)


def test_invalid_gate_arguments():
    with pytest.raises(ValueError, match="`top_k` must be in \\[0, num_experts=4\\], got 5"):
        SoftmaxGate(4, top_k=5)
    with pytest.raises(ValueError, match="`expert_dropout` must be in \\[0, 1\\), got 1.0"):
        SoftmaxGate(4, expert_dropout=1.0)
    with pytest.raises(ValueError, match="not 'shared'"):
        CGC(["shared"], 2, 1, [4])
