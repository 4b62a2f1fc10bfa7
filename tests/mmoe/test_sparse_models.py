"""Sparse gating and staged training through the whole model: train, reload, export, no skew."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from feature_specs.spec import SpecError, TrainingConfig
from feature_specs.spec_reader import bundled_spec_path, spec_from_dict
from mmoe.data import split_files
from mmoe.evaluate import collect_predictions
from mmoe.loop import Trainer
from mmoe.model import GATE_WEIGHTS
from mmoe.stages import EXPERTS, GATES, JOINT, gate_variables, stage_of_epoch
from serving.export import export_saved_model

SCORER = textwrap.dedent(
    """
    import glob, json, sys
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(sys.argv[2])), compression_type="GZIP")]
    outputs = model.signatures["serving_default"](examples=tf.constant(serialized))
    json.dump({k: v.numpy().tolist() for k, v in outputs.items()}, sys.stdout)
    """
)


def _spec(trained_run, architecture="mmoe", training=None, **model):
    spec = trained_run.spec
    model = {"num_experts": 8, "gate_top_k": 2, "expert_units": (16, 8), "architecture": architecture, **model}
    training = {"batch_size": 128, **(training or {})}
    return dataclasses.replace(
        spec, model=dataclasses.replace(spec.model, **model), training=dataclasses.replace(spec.training, **training)
    )


def _trainer(trained_run, tmp_path, strategy=None, **kwargs):
    spec = _spec(trained_run, **kwargs)
    return Trainer(spec, dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model")), strategy)


@pytest.mark.parametrize(
    "architecture, gate_type",
    [("mmoe", "softmax"), ("omoe", "softmax"), ("mmoe", "dselect_k"), ("ple", "softmax"), ("ple", "dselect_k")],
)
def test_sparse_gates_train_reload_export_and_serve_without_skew(trained_run, tmp_path, architecture, gate_type):
    keras.utils.set_random_seed(5)
    trainer = _trainer(trained_run, tmp_path, architecture=architecture, gate_type=gate_type)
    losses = [trainer.train_step(batch)["loss"] for batch in trainer.dataset("train").take(3)]
    assert np.isfinite(losses).all()
    models, spec = trainer.models, trainer.spec

    features = next(iter(trainer.dataset("eval")))[0]
    path = str(tmp_path / "train.keras")
    models.core.save(path)
    reloaded = keras.models.load_model(path)
    for task in spec.task_names:
        np.testing.assert_allclose(
            reloaded.predict_on_batch(features)[task], models.core.predict_on_batch(features)[task], rtol=1e-5, atol=1e-6
        )

    eval_files = split_files(trained_run.workdir, "eval")
    expected = collect_predictions(spec, models.serving, eval_files)
    assert (np.count_nonzero(expected[GATE_WEIGHTS], axis=-1) <= 2).all()
    export = export_saved_model(spec, models.serving, str(tmp_path / "export"))
    script = tmp_path / "score.py"
    script.write_text(SCORER)
    run = subprocess.run(
        [sys.executable, str(script), export, trained_run.workdir.split_pattern("eval")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout)
    for name in ("click_probability", "engagement", "score"):
        np.testing.assert_allclose(np.array(served[name]), expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_dispatching_step_is_the_same_under_xla_and_under_a_mirrored_strategy(trained_run, tmp_path):
    results = []
    for name, jit, strategy in [("plain", False, None), ("xla", True, None),
                                ("mirrored", True, tf.distribute.MirroredStrategy(["/cpu:0"]))]:
        keras.utils.set_random_seed(7)
        trainer = _trainer(trained_run, tmp_path / name, strategy, training={"jit_compile": jit}, expert_capacity_factor=1.0)
        batches = trainer.input.distributed("train", 0, 0) if strategy else trainer.dataset("train")
        iterator = iter(batches)
        logs = [trainer.train_step(next(iterator)) for _ in range(2)]
        results.append((logs, [v.numpy() for v in trainer.models.core.trainable_variables]))
    (plain_logs, plain_weights), *others = results
    for logs, weights in others:
        for got, want in zip(logs, plain_logs):
            for key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-4), key
        for got, want in zip(weights, plain_weights):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_the_share_of_assignments_the_capacity_drops(trained_run, tmp_path):
    tight = _trainer(trained_run, tmp_path / "tight", expert_capacity_factor=0.5)
    assert 0.4 < tight.dispatch_dropped() < 1.0  # half the average load: at least half dropped
    roomy = _trainer(trained_run, tmp_path / "roomy", expert_capacity_factor=4.0)  # E / (T * k): room for all
    assert roomy.dispatch_dropped() == 0.0
    assert _trainer(trained_run, tmp_path / "dense", gate_top_k=0).dispatch_dropped() is None


def test_stages_follow_the_epochs():
    training = dataclasses.replace(TrainingConfig(), epochs=5, expert_stage_epochs=2, gate_stage_epochs=1)
    assert [stage_of_epoch(training, e) for e in range(5)] == [EXPERTS, EXPERTS, GATES, JOINT, JOINT]
    assert stage_of_epoch(TrainingConfig(), 0) == JOINT


def test_staged_training_trains_experts_then_gates_then_everything(trained_run, tmp_path):
    keras.utils.set_random_seed(3)
    trainer = _trainer(
        trained_run, tmp_path, num_experts=4, expert_units=(8,),
        training={"epochs": 3, "expert_stage_epochs": 1, "gate_stage_epochs": 1},
    )
    assert trainer.stage == EXPERTS  # epoch 0
    gates = gate_variables(trainer.models.core)
    assert len(gates) == 4  # kernel and bias of each task's gate
    gate_ids = {id(v) for v in gates}
    others = [v for v in trainer.models.core.trainable_variables if id(v) not in gate_ids]
    batch = next(iter(trainer.dataset("train")))

    def step(stage):
        before = [v.numpy().copy() for v in gates], [v.numpy().copy() for v in others]
        trainer.use_stage(stage)
        trainer.train_step(batch)
        return [[not np.array_equal(b, v.numpy()) for b, v in zip(part, variables)]
                for part, variables in zip(before, (gates, others))]

    gates_moved, others_moved = step(EXPERTS)
    assert not any(gates_moved) and all(others_moved)  # experts (and embeddings, towers) first
    gates_moved, others_moved = step(GATES)
    assert all(gates_moved) and not any(others_moved)  # then the gates alone; Adam moments kept
    gates_moved, others_moved = step(JOINT)
    assert all(gates_moved) and any(others_moved)  # then everything


def test_staged_training_needs_gates(trained_run, tmp_path):
    with pytest.raises(SpecError, match="training.expert_stage_epochs: staged training needs a gated"):
        _trainer(trained_run, tmp_path, architecture="shared_bottom", training={"expert_stage_epochs": 1})


def _read(model=None, training=None):
    with open(bundled_spec_path("clicklog")) as handle:
        data = yaml.safe_load(handle)
    data["model"] = {**data.get("model", {}), **(model or {})}
    data["training"] = {**data.get("training", {}), **(training or {})}
    return spec_from_dict(data)


def test_spec_reads_the_sparse_gating_and_stage_keys():
    spec = _read(
        {"gate_type": "dselect_k", "gate_top_k": 2, "expert_capacity_factor": 2, "dselect_gamma": 0.5,
         "dselect_entropy_weight": 0.1},
        {"epochs": 4, "expert_stage_epochs": 2, "gate_stage_epochs": 1},
    )
    assert (spec.model.gate_type, spec.model.expert_capacity_factor, spec.model.dselect_gamma) == ("dselect_k", 2.0, 0.5)
    assert (spec.training.expert_stage_epochs, spec.training.gate_stage_epochs) == (2, 1)
    assert spec_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("model, training, message", [
    ({"gate_type": "noisy"}, {}, "model.gate_type: unknown value 'noisy'; expected one of softmax, dselect_k"),
    ({"gate_type": "dselect_k"}, {}, "model.gate_top_k: gate_type dselect_k needs gate_top_k >= 1"),
    ({"gate_type": "dselect_k", "gate_top_k": 1, "expert_dropout": 0.1}, {}, "model.expert_dropout: applies to softmax"),
    ({"expert_capacity_factor": -1}, {}, "model.expert_capacity_factor: must be >= 0"),
    ({"dselect_gamma": 0}, {}, "model.dselect_gamma: must be > 0"),
    ({}, {"epochs": 2, "expert_stage_epochs": 2, "gate_stage_epochs": 1},
     r"training.gate_stage_epochs: expert_stage_epochs \+ gate_stage_epochs \(3\) exceed epochs \(2\)"),
])
def test_bad_sparse_gating_and_stage_keys_name_the_key(model, training, message):
    with pytest.raises(SpecError, match=message):
        _read(model, training)
