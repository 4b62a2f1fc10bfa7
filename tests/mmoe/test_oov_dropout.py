"""features[].oov_dropout: in training, a share of a vocabulary feature's lookups go to its OOV row."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from mmoe.layers.oov_dropout import OOVDropout
from mmoe.loop import Trainer
from served_scores import assert_served_scores_match

INDICES = np.arange(1, 20_001, dtype=np.int64).reshape(-1, 1)  # (batch, 1), every one in vocabulary


def test_outside_training_the_indices_pass_unchanged():
    layer = OOVDropout(0.5)
    np.testing.assert_array_equal(layer(INDICES).numpy(), INDICES)
    np.testing.assert_array_equal(layer(INDICES, training=False).numpy(), INDICES)
    np.testing.assert_array_equal(OOVDropout(0.0)(INDICES, training=True).numpy(), INDICES)


@pytest.mark.parametrize("rate,num_oov", [(0.3, 1), (0.6, 3)])
def test_in_training_about_rate_of_the_indices_go_to_their_oov_bucket(rate, num_oov):
    keras.utils.set_random_seed(7)
    out = OOVDropout(rate, num_oov)(INDICES, training=True).numpy()
    assert out.shape == INDICES.shape and out.dtype == INDICES.dtype
    dropped = out != INDICES
    kept_by_chance = (INDICES < num_oov) & (out == INDICES)  # indices already in [0, num_oov) look unchanged
    share = dropped.mean()
    assert abs(share - rate) < 4 * np.sqrt(rate * (1 - rate) / INDICES.size) + kept_by_chance.mean()
    np.testing.assert_array_equal(out[dropped], INDICES[dropped] % num_oov)  # a value's own bucket, as at serving


def test_the_same_seed_drops_the_same_rows_and_each_call_draws_anew():
    keras.utils.set_random_seed(3)
    first = OOVDropout(0.5)(INDICES, training=True).numpy()
    keras.utils.set_random_seed(3)
    layer = OOVDropout(0.5)
    again = layer(INDICES, training=True).numpy()
    np.testing.assert_array_equal(first, again)
    assert (layer(INDICES, training=True).numpy() != again).any()


def test_the_oov_row_gets_the_dropped_rows_gradient_and_the_layer_round_trips():
    keras.utils.set_random_seed(0)
    dropout, table = OOVDropout(0.5), keras.layers.Embedding(8, 3)
    indices = tf.constant([[1], [2], [3], [4], [5], [6], [7], [1]] * 8, tf.int64)
    with tf.GradientTape() as tape:
        looked_up = dropout(indices, training=True)
        loss = tf.reduce_sum(table(looked_up))
    gradient = tf.convert_to_tensor(tape.gradient(loss, table.embeddings)).numpy()
    counts = np.bincount(looked_up.numpy().ravel(), minlength=8)
    assert counts[0] > 0
    np.testing.assert_allclose(gradient, np.repeat(counts[:, None], 3, axis=1))  # each row: its uses

    clone = OOVDropout.from_config(OOVDropout(0.25, 4, seed=11, name="d").get_config())
    assert (clone.rate, clone.num_oov, clone.seed, clone.name) == (0.25, 4, 11, "d")
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\), got 1.0"):
        OOVDropout(1.0)
    with pytest.raises(ValueError, match="`num_oov` must be >= 1"):
        OOVDropout(0.1, 0)


def _with_feature(trained_run, name: str, **changes) -> dict:
    data = trained_run.spec.to_dict()
    data["features"] = [{**f, **changes} if f["name"] == name else f for f in data["features"]]
    return data


def test_the_spec_reads_oov_dropout_and_refuses_it_where_there_is_no_oov_row(trained_run):
    spec = spec_from_dict(_with_feature(trained_run, "user_id", oov_dropout=0.4))
    assert next(f for f in spec.features if f.name == "user_id").oov_dropout == 0.4
    assert spec_from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match=r"features\[0\].oov_dropout.*must be in \[0, 1\)"):
        spec_from_dict(_with_feature(trained_run, "user_id", oov_dropout=1.0))
    numeric = next(f.name for f in trained_run.spec.features if f.transform == "zscore")
    with pytest.raises(SpecError, match="oov_dropout.*scalar vocabulary features only"):
        spec_from_dict(_with_feature(trained_run, numeric, oov_dropout=0.2))


def test_a_model_with_oov_dropout_trains_its_oov_row_exports_and_serves_without_skew(trained_run, tmp_path):
    spec = spec_from_dict(_with_feature(trained_run, "user_id", oov_dropout=0.5))
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, batch_size=128))
    trainer = Trainer(spec, dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model")))
    models = trainer.models
    batch = next(iter(trainer.dataset("train")))
    table = next(layer for layer in models.core._flatten_layers() if layer.name == "user_id_embedding")
    models.core(batch[0], training=True)
    before = table.embeddings.numpy().copy()
    for _ in range(3):
        assert np.isfinite(trainer.train_step(batch)["loss"])
    assert not np.allclose(table.embeddings.numpy()[0], before[0])  # the OOV row learns from ordinary rows
    assert_served_scores_match(spec, models, trained_run.workdir, str(tmp_path / "export"))
    path = str(tmp_path / "core.keras")
    models.core.save(path)
    reloaded = keras.models.load_model(path)
    layer = next(layer for layer in reloaded._flatten_layers() if isinstance(layer, OOVDropout))
    assert (layer.name, layer.rate) == ("user_id_oov_dropout", 0.5)
