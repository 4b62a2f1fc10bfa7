"""model.embedding_l2: the L2 penalty of the embedding rows a batch looks up, in every table."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from mmoe.data import split_files
from mmoe.evaluate import collect_predictions
from mmoe.layers.pooled_embedding import PooledEmbedding, looked_up_rows_l2
from mmoe.layers.target_attention import TargetAttentionEmbedding
from mmoe.loop import Trainer
from serving.export import export_saved_model

L2 = 1e-2
INDICES = np.array([[1, 2, 0, 0], [3, 3, 3, 0], [0, 0, 0, 0]], np.int32)  # 0: padding


def _masked_penalty(table, indices):
    rows = table[indices] * (indices != 0)[..., None]
    return L2 * float(np.sum(rows ** 2)) / len(indices)


@pytest.mark.parametrize("make", [
    lambda: PooledEmbedding(5, 3, rows_l2=L2),
    lambda: TargetAttentionEmbedding(5, 3, rows_l2=L2),
], ids=["pooled", "attention"])
def test_list_layers_add_the_penalty_of_their_present_elements_and_only_those_rows_get_its_gradient(make):
    layer = make()
    inputs = tf.constant(INDICES) if isinstance(layer, PooledEmbedding) else [tf.constant(INDICES), tf.ones((3, 2))]
    with tf.GradientTape() as tape:
        layer(inputs)
        assert not layer.losses  # only in training
        layer(inputs, training=True)
        (penalty,) = layer.losses
    np.testing.assert_allclose(float(penalty), _masked_penalty(layer.embeddings.numpy(), INDICES), rtol=1e-5)
    gradient = tf.convert_to_tensor(tape.gradient(penalty, layer.embeddings)).numpy()
    assert np.abs(gradient[[1, 2, 3]]).min() > 0  # the looked-up rows
    assert not gradient[[0, 4]].any()  # padding and a row no one used

    clone = type(layer).from_config(layer.get_config())
    assert clone.rows_l2 == L2
    with pytest.raises(ValueError, match="rows_l2"):
        type(layer)(5, 3, rows_l2=-1.0)


def test_the_penalty_divides_by_the_batch():
    rows = tf.ones((4, 2, 3))
    np.testing.assert_allclose(float(looked_up_rows_l2(rows, 0.5)), 0.5 * 24 / 4)


def test_the_spec_reads_embedding_l2_and_refuses_a_negative_one_by_its_key_path(trained_run):
    data = {**trained_run.spec.to_dict(), "model": {**trained_run.spec.to_dict()["model"], "embedding_l2": 1e-4}}
    assert spec_from_dict(data).model.embedding_l2 == 1e-4
    data["model"]["embedding_l2"] = -1.0
    with pytest.raises(SpecError, match="model.embedding_l2"):
        spec_from_dict(data)


def _spec(trained_run, architecture):
    spec = trained_run.spec
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, architecture=architecture, embedding_l2=L2),
                               training=dataclasses.replace(spec.training, batch_size=128))


@pytest.mark.parametrize("architecture", ["mmoe", "single_task"])
def test_every_table_adds_its_rows_penalty_and_the_model_trains_exports_and_serves_without_skew(
        trained_run, tmp_path, architecture):
    spec = _spec(trained_run, architecture)
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
        rows = table[indices] * ((indices != 0)[..., None] if feature.is_list else 1.0)
        want += L2 * float(np.sum(rows ** 2)) / len(indices)
    np.testing.assert_allclose(float(tf.add_n(models.core.losses)), want, rtol=1e-4)

    assert np.isfinite(trainer.train_step(next(iter(trainer.dataset("train"))))["loss"])
    eval_files = split_files(trained_run.workdir, "eval")
    expected = collect_predictions(spec, models.serving, eval_files)
    export = tf.saved_model.load(export_saved_model(spec, models.serving, str(tmp_path / "export")))
    records = [r.numpy() for r in tf.data.TFRecordDataset(eval_files, compression_type="GZIP")]
    served = export.signatures["serving_default"](examples=tf.constant(records))
    np.testing.assert_allclose(served["score"].numpy().ravel(), expected["score"].ravel(), rtol=1e-4, atol=1e-6)
    path = str(tmp_path / "core.keras")
    models.core.save(path)
    reloaded = keras.models.load_model(path)
    reloaded(features, training=True)
    models.core(features, training=True)  # each call's losses replace the last call's
    np.testing.assert_allclose(float(tf.add_n(reloaded.losses)), float(tf.add_n(models.core.losses)), rtol=1e-5)
