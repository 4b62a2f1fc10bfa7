"""Training on the pipeline's output: losses, masks, bias tower, metrics and saved artifacts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mmoe.data import split_batch
from mmoe.evaluate import collect_predictions
from mmoe.train import load_trained_models
from mmoe.data import raw_batches, split_files


def test_metrics_json_has_the_documented_shape(trained_run):
    with open(trained_run.workdir.metrics_json) as handle:
        metrics = json.load(handle)
    assert set(metrics["click"]) >= {"auc", "log_loss", "calibration", "examples"}
    assert set(metrics["engagement"]) >= {"rmse_seconds", "mae_seconds", "examples"}
    assert 0.0 <= metrics["click"]["auc"] <= 1.0
    assert metrics["click"]["examples"] == trained_run.report["written"]["eval"]
    # engagement is scored only where it is observed: clicked rows
    assert 0 < metrics["engagement"]["examples"] < metrics["click"]["examples"]
    assert "ndcg@10" in metrics["ranking"]
    # served click probabilities mean "if shown at position 1": calibrated on those rows too
    at_serving = metrics["click"]["at_serving_values"]
    assert 0 < at_serving["examples"] < metrics["click"]["examples"]
    assert at_serving["calibration"] == pytest.approx(at_serving["mean_prediction"] / at_serving["mean_label"])
    for task in ("click", "engagement"):
        np.testing.assert_allclose(sum(metrics["gates"][task]["mean_weights"]), 1.0, rtol=1e-5)


def test_training_reduces_the_loss_and_writes_its_artifacts(trained_run):
    history = trained_run.result.history
    assert history["loss"][-1] < history["loss"][0]
    workdir = trained_run.workdir
    for path in (workdir.keras_model, workdir.history_json, workdir.learning_curves_png, workdir.gates_png,
                 workdir.gate_usage_png, workdir.serving_weights, workdir.best_weights, workdir.report_html):
        assert os.path.getsize(path) > 0, path
    with open(workdir.gates_png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(workdir.logs_dir), "TensorBoard logs"


def test_bias_feature_is_fixed_to_its_serving_value_at_serving(trained_run):
    spec, models = trained_run.spec, trained_run.result.models
    assert "position" in models.train.input and "position" not in models.serving.input
    batch = next(iter(raw_batches(split_files(trained_run.workdir, "eval"), spec, 64)))
    features = {f.name: batch[f.name] for f in spec.model_features}
    served = models.serving.predict_on_batch(features)["click"][:, 0]
    at_top = models.train.predict_on_batch({**features, "position": tf.ones_like(batch["position"])})["click"][:, 0]
    np.testing.assert_allclose(served, 1 / (1 + np.exp(-at_top)), rtol=1e-5)
    as_logged = models.train.predict_on_batch({**features, "position": batch["position"]})["click"][:, 0]
    assert not np.allclose(at_top, as_logged), "the bias tower must depend on position"


def test_engagement_mask_is_the_click_label(trained_run):
    batch = {c.name: tf.constant([[v] for v in values]) for c, values in [
        (trained_run.spec.column(n), vals) for n, vals in {
            "clicked": [1, 0, 1], "dwell_seconds": [10.0, 0.0, 0.0],
        }.items()
    ]}
    for feature in trained_run.spec.features:
        batch.setdefault(feature.name, tf.zeros((3, 1), tf.string if feature.dtype == "string" else tf.float32))
    features, labels, weights = split_batch(trained_run.spec, batch)
    np.testing.assert_allclose(weights["engagement"].numpy(), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(weights["click"].numpy(), [1.0, 1.0, 1.0])
    engagement = trained_run.spec.task("engagement")  # ziln: the label in seconds; mse on log1p: log1p(seconds)
    expected = np.log1p([10.0, 0.0, 0.0]) if engagement.label_transform == "log1p" else [10.0, 0.0, 0.0]
    np.testing.assert_allclose(labels["engagement"].numpy()[:, 0], expected, rtol=1e-6)
    assert "position" in features


def test_trained_weights_reload_into_rebuilt_models(trained_run):
    spec, workdir = trained_run.spec, trained_run.workdir
    files = split_files(workdir, "eval")
    before = collect_predictions(spec, trained_run.result.models.serving, files)
    after = collect_predictions(spec, load_trained_models(spec, workdir).serving, files)
    np.testing.assert_allclose(after["score"], before["score"], rtol=1e-6)


def test_gate_usage_is_recorded_every_epoch(trained_run):
    with open(trained_run.workdir.gate_usage_json) as handle:
        usage = json.load(handle)
    assert len(usage) == trained_run.spec.training.epochs
    for epoch in usage:
        for task in trained_run.spec.task_names:
            np.testing.assert_allclose(sum(epoch[task]["mean_weights"]), 1.0, rtol=1e-5)
            assert 0 <= epoch[task]["mean_entropy"] <= epoch[task]["max_entropy"] + 1e-9
    assert "gate_entropy_click" in trained_run.result.history


def test_trained_spec_is_saved_beside_the_model(trained_run):
    from feature_specs.spec_reader import spec_from_dict

    with open(trained_run.workdir.trained_spec_json) as handle:
        assert spec_from_dict(json.load(handle)) == trained_run.spec
