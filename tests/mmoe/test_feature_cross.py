"""model.cross_layers: DCN-v2 cross layers (keras_rs.layers.FeatureCross) on the encoded features."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec import ModelConfig, SpecError
from feature_specs.spec_reader import spec_from_dict
from mmoe.loop import Trainer
from served_scores import assert_served_scores_match
from mmoe.model import crossed


def _cross_by_hand(layer, first, x):
    """``x_0 * (W x + b) + x`` with the layer's own weights (``W = U V`` when low-rank)."""
    projected = x @ layer.down_proj_dense.kernel.numpy() if layer.projection_dim else x
    return first * (projected @ layer.dense.kernel.numpy() + layer.dense.bias.numpy()) + x


@pytest.mark.parametrize("projection_dim", [0, 2])
def test_two_cross_layers_compute_the_stacked_dcn_v2_recursion_and_pass_gradients_to_every_kernel(projection_dim):
    keras.utils.set_random_seed(0)
    config = ModelConfig(cross_layers=2, cross_projection_dim=projection_dim)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, crossed(inputs, config, prefix="click_"))
    assert [layer.name for layer in model.layers[1:]] == ["click_cross_0", "click_cross_1"]
    for layer in model.layers[1:]:  # non-zero biases, so the test sees them
        layer.dense.bias.assign(np.random.default_rng(1).normal(size=5).astype("float32"))
    x0 = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    x1 = _cross_by_hand(model.layers[1], x0, x0)
    np.testing.assert_allclose(model(x0).numpy(), _cross_by_hand(model.layers[2], x0, x1), rtol=1e-5, atol=1e-6)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x0) ** 2)
    gradients = tape.gradient(loss, model.trainable_variables)
    assert len(gradients) == (3 if projection_dim else 2) * 2
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x0).numpy(), model(x0).numpy(), rtol=1e-6)


def test_no_cross_layers_leave_the_input_as_it_is():
    inputs = keras.Input((5,))
    assert crossed(inputs, ModelConfig()) is inputs


def test_the_spec_reads_cross_layers_and_refuses_negative_ones_by_key_path(trained_run):
    data = trained_run.spec.to_dict()
    data["model"] = {**data["model"], "cross_layers": 2, "cross_projection_dim": 8}
    assert (spec_from_dict(data).model.cross_layers, spec_from_dict(data).model.cross_projection_dim) == (2, 8)
    for key in ("cross_layers", "cross_projection_dim"):
        with pytest.raises(SpecError, match=f"model.{key}.*must be >= 0"):
            spec_from_dict({**data, "model": {**data["model"], key: -1}})


@pytest.mark.parametrize("architecture", ["mmoe", "single_task"])
def test_a_crossed_model_trains_exports_and_serves_without_skew(trained_run, tmp_path, architecture):
    spec = trained_run.spec
    spec = dataclasses.replace(
        spec, model=dataclasses.replace(spec.model, architecture=architecture, cross_layers=2, cross_projection_dim=4),
        training=dataclasses.replace(spec.training, batch_size=128))
    trainer = Trainer(spec, dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model")))
    models = trainer.models
    crosses = sorted(layer.name for layer in models.core._flatten_layers() if "cross_" in layer.name)
    want = ["cross_0", "cross_1"] if architecture == "mmoe" else sorted(
        f"{task}_cross_{level}" for task in spec.task_names for level in (0, 1))
    assert crosses == want  # single_task: each task crosses its own embeddings
    before = {v.path: v.numpy() for v in models.core.trainable_variables if "cross_" in v.path}
    assert np.isfinite(trainer.train_step(next(iter(trainer.dataset("train"))))["loss"])
    after = {v.path: v.numpy() for v in models.core.trainable_variables if "cross_" in v.path}
    assert all(not np.array_equal(before[path], after[path]) for path in before)  # every cross kernel learns

    assert_served_scores_match(spec, models, trained_run.workdir, str(tmp_path / "export"))
    path = str(tmp_path / "core.keras")
    models.core.save(path)
    features, _, _ = next(iter(trainer.dataset("train")))
    reloaded, original = keras.models.load_model(path)(features), models.core(features)
    assert set(reloaded) == set(original)
    for task in original:
        np.testing.assert_allclose(reloaded[task].numpy(), original[task].numpy(), rtol=1e-5, atol=1e-6)
