"""model.embedding_l2: the L2 penalty of the embedding rows a batch looks up, in every table, counted
per use (``embedding_l2_per: lookup``) or once per distinct row (``row``)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from mmoe.layers.pooled_embedding import LookedUpRowsL2, PooledEmbedding, looked_up_rows_l2
from mmoe.layers.target_attention import TargetAttentionEmbedding
from mmoe.loop import Trainer
from served_scores import assert_served_scores_match

L2 = 1e-2
INDICES = np.array([[1, 2, 0, 0], [3, 3, 3, 0], [0, 0, 0, 0]], np.int32)  # 0: padding


def _penalty(table, indices, per="lookup", masked=True):
    """The penalty by hand: every present use of a row, or each distinct present row once."""
    present = indices != 0 if masked else np.ones(indices.shape, bool)
    if per == "row":
        return L2 * sum(float(np.sum(table[i] ** 2)) for i in np.unique(indices[present])) / len(indices)
    rows = table[indices] * present[..., None]
    return L2 * float(np.sum(rows ** 2)) / len(indices)


@pytest.mark.parametrize("per", ["lookup", "row"])
@pytest.mark.parametrize("make", [
    lambda per: PooledEmbedding(5, 3, rows_l2=L2, rows_l2_per=per),
    lambda per: TargetAttentionEmbedding(5, 3, rows_l2=L2, rows_l2_per=per),
], ids=["pooled", "attention"])
def test_list_layers_add_the_penalty_of_their_present_elements_and_only_those_rows_get_its_gradient(make, per):
    layer = make(per)
    inputs = tf.constant(INDICES) if isinstance(layer, PooledEmbedding) else [tf.constant(INDICES), tf.ones((3, 2))]
    with tf.GradientTape() as tape:
        layer(inputs)
        assert not layer.losses  # only in training
        layer(inputs, training=True)
        (penalty,) = layer.losses
    np.testing.assert_allclose(float(penalty), _penalty(layer.embeddings.numpy(), INDICES, per), rtol=1e-5)
    gradient = tf.convert_to_tensor(tape.gradient(penalty, layer.embeddings)).numpy()
    assert np.abs(gradient[[1, 2, 3]]).min() > 0  # the looked-up rows
    assert not gradient[[0, 4]].any()  # padding and a row no one used

    clone = type(layer).from_config(layer.get_config())
    assert (clone.rows_l2, clone.rows_l2_per) == (L2, per)
    with pytest.raises(ValueError, match="rows_l2"):
        type(layer)(5, 3, rows_l2=-1.0)
    with pytest.raises(ValueError, match="`rows_l2_per` must be one of lookup, row, got 'rows'"):
        type(layer)(5, 3, rows_l2=L2, rows_l2_per="rows")


def test_the_penalty_divides_by_the_batch_and_per_row_counts_each_distinct_row_once():
    rows = tf.ones((4, 2, 3))
    np.testing.assert_allclose(float(looked_up_rows_l2(rows, 0.5)), 0.5 * 24 / 4)
    # Row 7 used 5 times and row 2 once: per row, each counts its 3 squares once.
    indices = tf.constant([[7, 7], [7, 2], [7, 7], [7, 7]])
    rows = tf.ones((4, 2, 3))
    np.testing.assert_allclose(float(looked_up_rows_l2(rows[:, :1], 0.5, indices[:, :1], 8)), 0.5 * 3 / 4)
    np.testing.assert_allclose(float(looked_up_rows_l2(rows * tf.constant([1.0, 1.0, 1.0]), 0.5, indices, 8)),
                               0.5 * (3 + 3) / 4)


@pytest.mark.parametrize("per", ["lookup", "row"])
def test_the_rows_layer_of_a_plain_table_adds_its_penalty_in_training_and_round_trips(per):
    table = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    indices = np.array([[1], [1], [5], [1]], np.int32)  # (batch, 1), as a scalar feature's
    layer = LookedUpRowsL2(L2, num_rows=6, per=per)
    rows = tf.constant(table[indices])
    np.testing.assert_array_equal(layer([tf.constant(indices), rows]).numpy(), rows.numpy())
    assert not layer.losses
    layer([tf.constant(indices), rows], training=True)
    np.testing.assert_allclose(float(layer.losses[0]), _penalty(table, indices, per, masked=False), rtol=1e-5)
    clone = LookedUpRowsL2.from_config(layer.get_config())
    assert (clone.l2, clone.num_rows, clone.per) == (L2, 6, per)


def test_the_spec_reads_embedding_l2_and_refuses_a_negative_one_by_its_key_path(trained_run):
    data = {**trained_run.spec.to_dict(), "model": {**trained_run.spec.to_dict()["model"], "embedding_l2": 1e-4}}
    assert spec_from_dict(data).model.embedding_l2 == 1e-4
    assert spec_from_dict(data).model.embedding_l2_per == "lookup"
    data["model"]["embedding_l2_per"] = "row"
    assert spec_from_dict(data).model.embedding_l2_per == "row"
    data["model"]["embedding_l2_per"] = "distinct"
    with pytest.raises(SpecError, match="model.embedding_l2_per"):
        spec_from_dict(data)
    data["model"]["embedding_l2_per"] = "row"
    data["model"]["embedding_l2"] = -1.0
    with pytest.raises(SpecError, match="model.embedding_l2"):
        spec_from_dict(data)


def _spec(trained_run, architecture, per="lookup"):
    spec = trained_run.spec
    model = dataclasses.replace(spec.model, architecture=architecture, embedding_l2=L2, embedding_l2_per=per)
    return dataclasses.replace(spec, model=model, training=dataclasses.replace(spec.training, batch_size=128))


@pytest.mark.parametrize("architecture,per", [("mmoe", "lookup"), ("single_task", "lookup"), ("mmoe", "row")])
def test_every_table_adds_its_rows_penalty_and_the_model_trains_exports_and_serves_without_skew(
        trained_run, tmp_path, architecture, per):
    spec = _spec(trained_run, architecture, per)
    trainer = Trainer(spec, dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model")))
    features, _, _ = next(iter(trainer.dataset("train")))
    models = trainer.models
    models.core(features, training=True)
    tables = [layer for layer in models.core._flatten_layers() if layer.name.endswith("_embedding")]
    assert tables  # single_task: each task's own tables too
    want = 0.0
    for layer in tables:
        table = layer.embeddings.numpy()
        feature = max((f for f in spec.features if layer.name.endswith(f"{f.name}_embedding")),
                      key=lambda f: len(f.name))  # single_task's tables: "<task>_<feature>_embedding"
        indices = features[feature.name].numpy().astype(int)
        want += _penalty(table, indices, per, masked=feature.is_list)
    np.testing.assert_allclose(float(tf.add_n(models.core.losses)), want, rtol=1e-4)

    assert np.isfinite(trainer.train_step(next(iter(trainer.dataset("train"))))["loss"])
    assert_served_scores_match(spec, models, trained_run.workdir, str(tmp_path / "export"))
    path = str(tmp_path / "core.keras")
    models.core.save(path)
    reloaded = keras.models.load_model(path)
    reloaded(features, training=True)
    models.core(features, training=True)  # each call's losses replace the last call's
    np.testing.assert_allclose(float(tf.add_n(reloaded.losses)), float(tf.add_n(models.core.losses)), rtol=1e-5)
