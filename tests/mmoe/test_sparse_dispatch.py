"""Sparse dispatch (mmoe.layers.dispatch) and the DSelect-k gate, as layers."""

from __future__ import annotations

import numpy as np
import pytest
import keras
import tensorflow as tf

from mmoe.layers import CGC, DSelectKGate, ExpertBank, MMoE, OMoE, SoftmaxGate
from mmoe.layers import dispatch
from mmoe.layers.dselect import binary_codes, hard_selection, smooth_step
from mmoe.layers.mixture import mix

TASKS = ["click", "engagement"]


def _x(batch=64, dim=12, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, dim)).astype("float32"))


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _bank_and_gates(num_experts=8, k=2, units=(16, 8), dim=12, gates=2, fused=True):
    keras.utils.set_random_seed(3)
    bank = ExpertBank(num_experts, list(units), fused=fused)
    bank.build((None, dim))
    gate_layers = [SoftmaxGate(num_experts, top_k=k) for _ in range(gates)]
    for gate in gate_layers:
        gate.build((None, dim))
    return bank, gate_layers


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("units", [(16,), (16, 8)])
def test_with_room_for_every_row_dispatch_equals_the_dense_masked_mixture_and_its_gradients(units, fused):
    bank, gates = _bank_and_gates(units=units, fused=fused)
    x = _x()
    variables = bank.trainable_variables + [v for g in gates for v in g.trainable_variables]

    def dense():
        experts = bank.expert_outputs(x)
        return [mix(g(x), experts) for g in gates]

    def sparse(capacity_factor):
        return dispatch.dispatched_mixtures([g(x) for g in gates], x, bank, 2, capacity_factor)[0]

    results = []
    for run in (dense, lambda: sparse(None), lambda: sparse(8 / (2 * 2))):  # E / choices: capacity = batch
        with tf.GradientTape() as tape:
            mixtures = run()
            loss = sum(tf.reduce_sum(tf.sin(m) * (i + 1)) for i, m in enumerate(mixtures))
        results.append(([_np(m) for m in mixtures], [_np(tf.convert_to_tensor(g)) for g in tape.gradient(loss, variables)]))
    (want, want_grads), *others = results
    for got, got_grads in others:
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(got_grads, want_grads):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_routing_places_first_choices_first_and_drops_past_capacity():
    experts = tf.constant([[0, 1], [0, 2], [0, 1], [2, 0]], tf.int32)  # 4 rows, 2 choices each
    slots, keep, capacity = dispatch.route(experts, num_experts=3, capacity=2)
    # expert 0 gets rows 0 and 1 (first choices); row 2's first choice and row 3's second overflow
    np.testing.assert_array_equal(_np(keep), [[True, True], [True, True], [False, True], [True, False]])
    np.testing.assert_array_equal(_np(slots), [[0, 2], [1, 5], [6, 3], [4, 6]])  # e * C + position; E*C = dropped
    _, keep, capacity = dispatch.route(experts, num_experts=3)
    assert int(capacity) == 4 and bool(np.all(_np(keep)))  # the largest load: nothing dropped


@pytest.mark.parametrize("jit_compile", [False, True])
def test_each_place_counts_the_earlier_assignments_to_its_expert_and_bank_outsiders_take_none(jit_compile):
    rng = np.random.default_rng(3)
    experts = rng.integers(-1, 5, size=(300, 3)).astype(np.int32)  # -1: a choice in another bank
    slots, keep, capacity = tf.function(lambda e: dispatch.route(e, 5), jit_compile=jit_compile)(tf.constant(experts))
    flat = experts.T.reshape(-1)  # placement order: column 0 of every row, then column 1, ...
    want_position = np.array([np.sum(flat[:i] == e) for i, e in enumerate(flat)]).reshape(3, 300).T
    loads = np.bincount(flat[flat >= 0], minlength=5)
    assert int(capacity) == loads.max()
    np.testing.assert_array_equal(_np(keep), experts >= 0)
    want = np.where(experts >= 0, experts * loads.max() + want_position, 5 * loads.max())
    np.testing.assert_array_equal(_np(slots), want)


def test_a_dropped_choice_gives_its_weight_to_the_others_and_an_all_dropped_row_a_zero_mixture():
    outputs = tf.reshape(tf.range(2 * 2 * 1, dtype=tf.float32) + 1.0, (2, 2, 1))  # E=2, C=2, units=1
    values = tf.constant([[0.75, 0.25], [0.6, 0.4], [0.5, 0.5]])
    slots = tf.constant([[0, 2], [1, 4], [4, 4]])
    keep = tf.constant([[True, True], [True, False], [False, False]])
    mixed = _np(dispatch.combine(dispatch.output_table([outputs]), values, slots, keep))[:, 0]
    np.testing.assert_allclose(mixed, [0.75 * 1 + 0.25 * 3, 2.0, 0.0])


def test_training_capacity_follows_the_factor_and_never_exceeds_the_batch():
    assert dispatch.train_capacity(1024, 32, 2, 1.25) == 80
    assert dispatch.train_capacity(100, 4, 2, 10.0) == 100
    assert int(dispatch.train_capacity(tf.constant(1024), 32, 2, 1.25)) == 80


def test_dispatch_compiles_under_xla_with_a_batch_known_only_when_called():
    bank, gates = _bank_and_gates()
    x = _x()

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, 12], tf.float32)])
    def compiled(inputs):
        with tf.GradientTape() as tape:
            mixtures, keep = dispatch.dispatched_mixtures([g(inputs) for g in gates], inputs, bank, 2, 1.0)
            loss = tf.add_n([tf.reduce_sum(m) for m in mixtures])
        return mixtures[0], tape.gradient(loss, bank.kernels[0]), keep

    mixture, gradient, keep = compiled(x)
    eager = dispatch.dispatched_mixtures([g(x) for g in gates], x, bank, 2, 1.0)[0][0]
    np.testing.assert_allclose(_np(mixture), _np(eager), rtol=1e-5, atol=1e-6)
    assert gradient.shape == bank.kernels[0].shape
    assert 0.5 < float(np.mean(_np(keep))) < 1.0  # capacity 1.0 drops some of a skewed gate's rows


def test_dropped_fraction_counts_what_training_capacity_drops():
    weights = np.zeros((8, 1, 4), "float32")
    weights[:, 0, 0] = 1.0  # every row wants expert 0 only (k=1); capacity ceil(1.0 * 8 / 4) = 2
    assert dispatch.dropped_fraction(weights, k=1, capacity_factor=1.0) == pytest.approx(6 / 8)
    assert dispatch.dropped_fraction(weights, k=1, capacity_factor=4.0) == 0.0


def test_mmoe_dispatches_in_training_and_drops_nothing_at_inference():
    keras.utils.set_random_seed(1)
    layer = MMoE(TASKS, num_experts=8, expert_units=[8], gate_top_k=2, capacity_factor=0.5)
    x = _x()
    inference, gates = layer(x, training=False)
    reference = ExpertBank(8, [8])
    reference.build((None, 12))
    reference.set_expert_weights(layer.experts.expert_weights())
    experts = reference.expert_outputs(x)
    for t, task in enumerate(TASKS):
        np.testing.assert_allclose(_np(inference[task]), _np(mix(gates[:, t], experts)), rtol=1e-5, atol=1e-6)
    training, _ = layer(x, training=True)  # capacity 0.5: some rows lose a choice
    assert not np.allclose(_np(training["click"]), _np(inference["click"]))
    assert (np.count_nonzero(_np(gates), axis=-1) == 2).all()


def test_omoe_dispatches_its_one_gate_once():
    layer = OMoE(TASKS, num_experts=4, expert_units=[8], gate_top_k=1)
    mixtures, gates = layer(_x(), training=True)
    np.testing.assert_allclose(_np(mixtures["click"]), _np(mixtures["engagement"]))
    assert (np.count_nonzero(_np(gates)[:, 0], axis=-1) == 1).all()


def test_smooth_step_and_binary_codes():
    t = tf.constant([-1.0, -0.5, 0.0, 0.25, 0.5, 2.0])
    np.testing.assert_allclose(_np(smooth_step(t, 1.0)), [0, 0, 0.5, -2 * 0.25**3 + 1.5 * 0.25 + 0.5, 1, 1], atol=1e-7)
    bits, fold = binary_codes(5)  # 3 bits, 8 codes; codes 5, 6, 7 fold onto experts 0, 1, 2
    assert bits.shape == (8, 3) and fold.shape == (8, 5)
    np.testing.assert_array_equal(bits[6], [0, 1, 1])
    np.testing.assert_array_equal(fold.argmax(axis=1), [0, 1, 2, 3, 4, 0, 1, 2])


def test_dselect_weights_sum_to_one_and_become_at_most_k_hot_when_saturated():
    gate = DSelectKGate(num_experts=6, k=2, gamma=1.0, seed=0)
    x = _x(dim=5)
    weights = _np(gate(x))
    assert weights.shape == (64, 6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    gate.code_kernel.assign(np.zeros_like(_np(gate.code_kernel)))
    gate.code_bias.assign([3.0, -3.0, 3.0, -3.0, 3.0, -3.0])  # selector 0: code 101 = expert 5; 1: 010 = 2
    hard = _np(gate(x))
    np.testing.assert_array_equal(np.count_nonzero(hard, axis=-1), 2)
    assert set(np.nonzero(hard[0])[0]) == {2, 5}
    np.testing.assert_allclose(_np(hard_selection(tf.constant(hard), 2)), hard, rtol=1e-6)


def test_dselect_entropy_loss_only_in_training_and_gradients_reach_every_weight():
    gate = DSelectKGate(num_experts=8, k=2, entropy_weight=0.1, hidden_units=[4], seed=0)
    x = _x(dim=5)
    gate(x, training=False)
    assert not gate.losses
    with tf.GradientTape() as tape:
        weights = gate(x, training=True)
        loss = tf.reduce_sum(weights * tf.range(8, dtype=tf.float32)) + tf.add_n(gate.losses)
    assert len(gate.losses) == 1 and float(gate.losses[0]) > 0
    gradients = tape.gradient(loss, gate.trainable_variables)
    assert len(gradients) == 6 and all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients)


def test_hard_selection_keeps_the_k_largest_renormalized():
    weights = tf.constant([[0.1, 0.5, 0.3, 0.1]])
    np.testing.assert_allclose(_np(hard_selection(weights, 2)), [[0, 0.625, 0.375, 0]], rtol=1e-6)


@pytest.mark.parametrize("gate_type", ["softmax", "dselect_k"])
def test_sparse_layers_round_trip_through_config_and_keras_files(gate_type, tmp_path):
    keras.utils.set_random_seed(2)
    options = dict(gate_top_k=2, gate_type=gate_type, capacity_factor=2.0, dselect_gamma=0.5, dselect_entropy_weight=0.01)
    layer = MMoE(TASKS, num_experts=8, expert_units=[8, 4], **options)
    x = _x()
    expected, _ = layer(x, training=False)
    config = layer.get_config()
    assert {k: config[k] for k in options} == options
    clone = MMoE.from_config(config)
    assert clone.get_config() == config
    inputs = keras.Input((12,))
    mixtures, gates = layer(inputs)
    model = keras.Model(inputs, {"gates": gates, **mixtures})
    path = str(tmp_path / "sparse.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    for task in TASKS:
        np.testing.assert_allclose(reloaded.predict_on_batch(x)[task], _np(expected[task]), rtol=1e-5, atol=1e-6)
    gate = DSelectKGate(8, 3, gamma=2.0, entropy_weight=0.5, hidden_units=[4], seed=7)
    assert DSelectKGate.from_config(gate.get_config()).get_config() == gate.get_config()


def test_bad_sparse_options_name_the_argument():
    with pytest.raises(ValueError, match="gate_type"):
        MMoE(TASKS, num_experts=4, expert_units=[4], gate_type="noisy")
    with pytest.raises(ValueError, match="dselect_k"):
        MMoE(TASKS, num_experts=4, expert_units=[4], gate_type="dselect_k")
    with pytest.raises(ValueError, match="capacity_factor"):
        MMoE(TASKS, num_experts=4, expert_units=[4], gate_top_k=1, capacity_factor=-1.0)
    with pytest.raises(ValueError, match="`k`"):
        DSelectKGate(4, 5)


@pytest.mark.parametrize("output_shared", [False, True], ids=["last_level", "inner_level"])
def test_cgc_dispatch_over_own_and_shared_banks_equals_the_dense_masked_mixture_and_its_gradients(output_shared):
    keras.utils.set_random_seed(4)
    layer = CGC(TASKS, num_experts=4, task_experts=2, expert_units=[16, 8], gate_top_k=2,
                output_shared=output_shared, capacity_factor=100.0)  # room for every row
    x = _x()
    layer(x)

    def run(dispatches, training):
        layer._dispatches = (lambda *_: dispatches)
        with tf.GradientTape() as tape:
            mixtures, gates = layer(x, training=training)
            loss = sum(tf.reduce_sum(tf.sin(m) * (i + 1)) for i, m in enumerate(mixtures.values()))
        return {k: _np(v) for k, v in mixtures.items()}, _np(gates), [
            _np(tf.convert_to_tensor(g)) for g in tape.gradient(loss, layer.trainable_variables)]

    for training in (False, True):
        want, want_gates, want_grads = run(False, training)
        got, got_gates, got_grads = run(True, training)
        assert sorted(got) == sorted(want) == sorted(TASKS + (["shared"] if output_shared else []))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got_gates, want_gates)
        assert (np.count_nonzero(got_gates, axis=-1) == 2).all()
        for a, b in zip(got_grads, want_grads):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cgc_training_capacity_drops_choices_and_inference_drops_none():
    keras.utils.set_random_seed(2)
    layer = CGC(TASKS, num_experts=4, task_experts=2, expert_units=[8], gate_top_k=2, capacity_factor=0.3)
    x = _x()
    inference, _ = layer(x, training=False)
    layer._dispatches = (lambda *_: False)
    dense, _ = layer(x, training=False)
    del layer._dispatches
    for task in TASKS:
        np.testing.assert_allclose(_np(inference[task]), _np(dense[task]), rtol=1e-5, atol=1e-6)
    training, _ = layer(x, training=True)  # capacity 0.3 of the mean load: rows lose choices
    assert not np.allclose(_np(training["click"]), _np(inference["click"]))
