"""Every architecture of the family builds from spec + artifacts, trains, saves and exports."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmoe.architectures import BACKBONES
from mmoe.data import split_files, training_dataset
from mmoe.model import GATE_WEIGHTS, build_models
from mmoe.loop import Trainer
from mmoe.overrides import with_overrides
from serving.export import export_saved_model

GATED = {"mmoe": 4, "omoe": 4, "cgc": 5, "ple": 5, "stem": 6}  # experts each gate sees (cgc/ple: 1 own + 4 shared; stem: + 1 of the other task)


def _spec(trained_run, architecture):
    spec = trained_run.spec
    model = dataclasses.replace(spec.model, architecture=architecture, task_experts=1, num_levels=2, bottom_units=(16,))
    return dataclasses.replace(spec, model=model)


@pytest.mark.parametrize("architecture", sorted(BACKBONES))
def test_architecture_trains_reloads_and_exports(trained_run, architecture, tmp_path):
    spec = _spec(trained_run, architecture)
    trainer = Trainer(with_overrides(spec, batch_size=128), trained_run.workdir)
    models = trainer.models
    losses = [trainer.train_step(batch)["loss"] for batch in trainer.dataset("train").take(3)]
    assert np.isfinite(losses).all()
    data = training_dataset(spec, trained_run.workdir, "train", 128, shuffle=False).take(3)

    path = str(tmp_path / "train.keras")
    models.train.save(path)
    features, _, _ = next(iter(data))
    reloaded = keras.models.load_model(path)
    for task in spec.task_names:
        np.testing.assert_allclose(
            reloaded.predict_on_batch(features)[task], models.train.predict_on_batch(features)[task], rtol=1e-5
        )

    serving = models.serving.predict_on_batch({f.name: features[f.name] for f in spec.model_features})
    if architecture in GATED:
        assert serving[GATE_WEIGHTS].shape == (128, 2, GATED[architecture])
    else:
        assert GATE_WEIGHTS not in serving

    export = tf.saved_model.load(export_saved_model(spec, models.serving, str(tmp_path / "export")))
    records = tf.data.TFRecordDataset(split_files(trained_run.workdir, "eval"), compression_type="GZIP").take(16)
    outputs = export.signatures["serving_default"](examples=tf.constant([r.numpy() for r in records]))
    assert set(outputs) == {"click_probability", "engagement", "score"}
    assert np.isfinite(outputs["score"].numpy()).all()


def test_single_task_networks_share_no_weights(trained_run):
    models = build_models(_spec(trained_run, "single_task"), trained_run.workdir)
    names = [w.path for w in models.serving.weights]
    assert any(n.startswith("click_user_id_embedding") for n in names)
    assert any(n.startswith("engagement_user_id_embedding") for n in names)
    assert not any(n.startswith("user_id_embedding") for n in names)


def test_stem_experts_and_gates_read_their_task_s_own_tables(trained_run):
    """STEM: each task's experts and gate take embeddings of their own, the shared experts the shared ones."""
    from mmoe.architectures import GATED as GATED_ARCHITECTURES, OWN_AND_SHARED_EXPERTS

    assert set(GATED) == set(GATED_ARCHITECTURES) and "stem" in OWN_AND_SHARED_EXPERTS
    models = build_models(_spec(trained_run, "stem"), trained_run.workdir)
    names = [w.path for w in models.serving.weights]
    for table in ("user_id_embedding", "click_user_id_embedding", "engagement_user_id_embedding"):
        assert any(n.startswith(table) for n in names), table
    features = next(iter(training_dataset(trained_run.spec, trained_run.workdir, "train", 32, shuffle=False)))[0]
    with tf.GradientTape() as tape:
        outputs = models.train(features, training=False)
        click = tf.reduce_sum(outputs["click"])
    tables = {v.path.split("/")[0]: v for v in models.train.trainable_variables if "user_id_embedding" in v.path}
    grads = dict(zip(tables, tape.gradient(click, list(tables.values()))))
    assert grads["engagement_user_id_embedding"] is None, "click reads engagement's experts through a stop-gradient"
    assert grads["click_user_id_embedding"] is not None and grads["user_id_embedding"] is not None
    # ... but it does read them: click's predictions move when engagement's experts change.
    expert = next(v for v in models.train.trainable_variables if "experts_engagement" in v.path)
    before = models.train(features, training=False)["click"].numpy()
    expert.assign(expert * 0.0)
    assert np.abs(models.train(features, training=False)["click"].numpy() - before).max() > 0


def test_unknown_architecture_names_the_key_and_the_choices(trained_run):
    from feature_specs.spec import SpecError
    from mmoe.architectures import ARCHITECTURES, check_architecture

    assert ARCHITECTURES == tuple(BACKBONES)
    with pytest.raises(SpecError, match=r"model.architecture: unknown value 'mmo'; expected one of mmoe, omoe"):
        check_architecture(_spec(trained_run, "mmo"))


def test_architecture_names_load_without_tensorflow():
    """The CLI lists the choices in --help without starting TensorFlow."""
    import subprocess
    import sys

    code = "import sys, mmoe.architectures as a; print(a.ARCHITECTURES, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False"), out


def test_task_outputs_start_at_the_train_split_label_means(trained_run):
    """Binary heads start at the logit of the positive rate, regression heads at the mean label."""
    from feature_specs.artifacts import Statistics
    from mmoe.encoder import load_statistics
    from mmoe.losses import task_loss
    from mmoe.model import initial_output_bias

    statistics = load_statistics(trained_run.workdir)
    assert set(statistics.label_means) == set(trained_run.spec.task_names)
    keras.utils.set_random_seed(0)
    models = build_models(trained_run.spec, trained_run.workdir, statistics)
    for task in trained_run.spec.tasks:
        bias = models.core.get_layer(f"tower_{task.name}").dense_layers[-1].bias.numpy()
        mean = statistics.label_means[task.name]
        expected = [np.log(mean / (1 - mean))] if task.kind == "binary" else task_loss(task.loss).initial_bias(mean)
        np.testing.assert_allclose(bias, expected, rtol=1e-6)
        assert initial_output_bias(task, Statistics()) == [0.0] * task_loss(task.loss).output_units  # no label means yet
    click = next(t for t in trained_run.spec.tasks if t.kind == "binary")
    assert initial_output_bias(click, Statistics(label_means={click.name: 0.0})) == pytest.approx([np.log(1e-4 / (1 - 1e-4))])


def test_spec_guide_lists_the_architectures():
    import os
    import re

    guide = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs", "spec_guide.md")
    with open(guide, encoding="utf-8") as handle:
        row = next(line for line in handle if line.startswith("| `architecture` |"))
    assert tuple(re.findall(r"`(\w+)`", row.split("|")[3])) == ARCHITECTURES_IN_ORDER


ARCHITECTURES_IN_ORDER = tuple(BACKBONES)
