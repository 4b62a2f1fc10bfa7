"""Mean-loss and funnel heads through training, .keras, export and the skew check: the SavedModel,
scored in a TensorFlow-only process, answers what the in-process model predicts, and funnel heads
serve the conditional probability beside the joint one over every backbone."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec_reader import bundled_spec_path, load_spec
from mmoe.architectures import BACKBONES
from mmoe.data import split_files, training_dataset
from mmoe.evaluate import collect_predictions, compute_metrics
from mmoe.loop import Trainer
from mmoe.model import conditional_key
from mmoe.overrides import with_overrides
from mmoe.score import prediction_names
from serving.export import export_saved_model
from test_export import STANDALONE_SCORER


def _small(spec):
    return dataclasses.replace(
        spec,
        model=dataclasses.replace(spec.model, num_experts=3, expert_units=(8,), tower_units=(4,), task_experts=1,
                                  num_levels=2, bottom_units=(8,)),
        training=dataclasses.replace(spec.training, batch_size=128, epochs=1, shuffle_buffer=500),
    )


@pytest.fixture(scope="module")
def funnel_workdir(tmp_path_factory):
    """2,000 generated funnel impressions through the Beam pipeline."""
    from data_sets.funnel import generate_funnel
    from pipelines.run import preprocess

    root = tmp_path_factory.mktemp("funnel")
    workdir = Workdir(str(root))
    spec = _small(load_spec(bundled_spec_path("funnel")))
    preprocess(spec, generate_funnel(workdir.raw_dir, rows=2000, seed=5), workdir.root)
    return workdir


def _funnel_spec(head: str, architecture: str = "mmoe"):
    spec = _small(load_spec(bundled_spec_path("funnel")))
    tasks = tuple(dataclasses.replace(t, head=head) if t.after else t for t in spec.tasks)
    return dataclasses.replace(spec, tasks=tasks, model=dataclasses.replace(spec.model, architecture=architecture))


def _ziln_spec(trained_run):
    spec = trained_run.spec
    tasks = tuple(dataclasses.replace(t, loss="ziln", label_transform="none") if t.name == "engagement" else t
                  for t in spec.tasks)
    return dataclasses.replace(spec, tasks=tasks)


def _train_a_little(spec, workdir, steps=4):
    trainer = Trainer(with_overrides(spec, batch_size=128), workdir)
    losses = [trainer.train_step(batch)["loss"] for batch in trainer.dataset("train").take(steps)]
    assert np.isfinite(losses).all()
    return trainer.models


def _scored_elsewhere(export_path, workdir, tmp_path):
    script = tmp_path / "score.py"
    script.write_text(STANDALONE_SCORER)
    run = subprocess.run([sys.executable, str(script), export_path, workdir.split_pattern("eval")],
                         capture_output=True, text=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["project_modules"] == []
    return {name: np.array(values) for name, values in result["outputs"].items()}


@pytest.mark.parametrize("variant", ["ziln", "esmm", "aitm"])
def test_heads_reload_export_and_have_no_skew(variant, trained_run, funnel_workdir, tmp_path):
    if variant == "ziln":
        spec, workdir = _ziln_spec(trained_run), trained_run.workdir
    else:
        spec, workdir = _funnel_spec(variant), funnel_workdir
    keras.utils.set_random_seed(0)
    models = _train_a_little(spec, workdir)

    features, _, _ = next(iter(training_dataset(spec, workdir, "train", 64, shuffle=False)))
    path = str(tmp_path / "train.keras")
    models.train.save(path)
    reloaded = keras.models.load_model(path)
    for task in spec.task_names:
        np.testing.assert_allclose(reloaded.predict_on_batch(features)[task],
                                   models.train.predict_on_batch(features)[task], rtol=1e-5, atol=1e-6)

    export_path = export_saved_model(spec, models.serving, str(tmp_path / "export"))
    served = _scored_elsewhere(export_path, workdir, tmp_path)
    assert set(served) == set(prediction_names(spec))
    expected = collect_predictions(spec, models.serving, split_files(workdir, "eval"))
    for name in prediction_names(spec):
        np.testing.assert_allclose(served[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)

    if variant == "ziln":
        assert (served["engagement"] > 0).all()
        outputs = models.serving.predict_on_batch({f.name: features[f.name] for f in spec.model_features})
        assert outputs["engagement"].shape == (64, 3)  # P(y > 0), mu, sigma
    elif variant == "esmm":  # pCTCVR = pCTR x pCVR
        np.testing.assert_allclose(served["conversion_probability"],
                                   served["click_probability"] * served["conversion_given_click_probability"], rtol=1e-4)
    else:  # AITM: pCVR = pCTCVR / pCTR, at most 1
        ratio = np.minimum(served["conversion_probability"] / served["click_probability"], 1.0)
        np.testing.assert_allclose(served["conversion_given_click_probability"], ratio, rtol=1e-4)
    metrics = compute_metrics(spec, expected)
    if variant != "ziln":
        clicked = metrics["conversion"]["given_click"]
        assert clicked["examples"] == int((expected["click"] > 0).sum()) and 0.0 <= clicked["auc"] <= 1.0
        assert 0.0 <= metrics["click"]["gauc"] <= 1.0
    else:
        assert len(metrics["engagement"]["calibration_by_decile"]) == 10


@pytest.mark.parametrize("architecture", sorted(BACKBONES))
@pytest.mark.parametrize("head", ["esmm", "aitm"])
def test_funnel_heads_over_every_backbone(architecture, head, funnel_workdir):
    spec = _funnel_spec(head, architecture)
    models = _train_a_little(spec, funnel_workdir, steps=2)
    features, _, _ = next(iter(training_dataset(spec, funnel_workdir, "eval", 32, shuffle=False)))
    outputs = models.serving.predict_on_batch({f.name: features[f.name] for f in spec.model_features})
    conditional = outputs[conditional_key(spec.task("conversion"))]
    assert conditional.shape == (32, 1) and ((conditional >= 0) & (conditional <= 1)).all()
    joint, click = outputs["conversion"], outputs["click"]
    assert (joint <= click + 1e-6).all() if head == "esmm" else np.isfinite(joint).all()


def test_esmm_conditional_tower_starts_at_the_rate_given_the_earlier_task(funnel_workdir):
    from mmoe.encoder import load_statistics
    from mmoe.model import build_models

    spec = _funnel_spec("esmm")
    means = load_statistics(funnel_workdir).label_means
    models = build_models(spec, funnel_workdir)
    bias = models.core.get_layer("tower_conversion").dense_layers[-1].bias.numpy()
    rate = means["conversion"] / means["click"]
    np.testing.assert_allclose(bias, [np.log(rate / (1 - rate))], rtol=1e-5)
    assert tf.sigmoid(bias[0]).numpy() > means["conversion"]  # the conditional rate, not the joint one
