"""The SavedModel contract: layout, signatures, standalone loading, and no training/serving skew."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.tensors import TF_DTYPES, serving_columns
from mmoe.data import split_files
from mmoe.evaluate import collect_predictions
from feature_specs.errors import UserError
from serving.contract import VersionError, existing_versions
from serving.export import VersionExistsError, export_saved_model
from serving.staging import STALE_AFTER_SECONDS, STAGING_PREFIX
from mmoe.score import ranking_score, task_predictions

OUTPUTS = ["click_probability", "engagement", "score"]

# Runs in a fresh interpreter that imports nothing but TensorFlow (and the standard library).
STANDALONE_SCORER = textwrap.dedent(
    """
    import glob, json, sys
    import tensorflow as tf
    export_dir, data_pattern = sys.argv[1], sys.argv[2]
    model = tf.saved_model.load(export_dir)
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(data_pattern)), compression_type="GZIP")]
    outputs = model.signatures["serving_default"](examples=tf.constant(serialized))
    project = sorted(m for m in sys.modules if m.split(".")[0] in ("mmoe", "feature_specs", "pipelines", "serving"))
    json.dump({"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}, "project_modules": project}, sys.stdout)
    """
)


def test_version_directory_layout(trained_run):
    path = trained_run.export_path
    assert path == os.path.join(trained_run.workdir.export_base, "clicklog", "1")
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    with open(os.path.join(path, "assets.extra", "spec.json")) as handle:
        assert json.load(handle)["name"] == "clicklog"
    assets = os.listdir(os.path.join(path, "assets"))
    assert assets, "vocabularies must travel as SavedModel assets"
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp")]
    assert leftovers == []


def test_saved_model_cli_lists_both_signatures(trained_run):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", trained_run.export_path, "--all"], capture_output=True, text=True, check=True
    ).stdout
    default = shown.split("signature_def['serving_default']")[1]
    raw = shown.split("signature_def['predict_raw']")[1].split("signature_def[")[0]
    assert "inputs['examples']" in default and "DT_STRING" in default
    for output in OUTPUTS:
        assert f"outputs['{output}']" in default
        assert f"outputs['{output}']" in raw
    assert "outputs['gate_weights']" in raw and "shape: (-1, 2, 4)" in raw
    for column in serving_columns(trained_run.spec):
        assert f"inputs['{column.name}']" in raw
    assert "inputs['position']" not in raw, "bias features are fixed at serving, not inputs"


def test_no_training_serving_skew_in_a_tensorflow_only_process(trained_run, tmp_path):
    """Serialized training-file examples scored by the SavedModel elsewhere == in-process predictions."""
    workdir = trained_run.workdir
    eval_pattern = workdir.split_pattern("eval")
    expected = collect_predictions(trained_run.spec, trained_run.result.models.serving, split_files(workdir, "eval"))
    hidden = workdir.artifacts_dir + ".hidden"
    os.rename(workdir.artifacts_dir, hidden)  # the SavedModel must not need the vocabulary files
    try:
        script = tmp_path / "score.py"
        script.write_text(STANDALONE_SCORER)
        run = subprocess.run(
            [sys.executable, str(script), trained_run.export_path, eval_pattern],
            capture_output=True, text=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ""},
        )
    finally:
        os.rename(hidden, workdir.artifacts_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["project_modules"] == []
    for name in OUTPUTS:
        served = np.array(result["outputs"][name])
        assert served.shape == expected[name].shape
        np.testing.assert_allclose(served, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_predict_raw_matches_serving_default_and_returns_gates(trained_run):
    model = tf.saved_model.load(trained_run.export_path)
    files = split_files(trained_run.workdir, "eval")
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(50)]
    by_example = model.signatures["serving_default"](examples=tf.constant(serialized))
    parsed = tf.io.parse_example(serialized, {
        c.name: tf.io.FixedLenFeature([], TF_DTYPES[c.dtype])
        for c in serving_columns(trained_run.spec)
    })
    by_name = model.signatures["predict_raw"](**parsed)
    for name in OUTPUTS:
        np.testing.assert_allclose(by_name[name].numpy(), by_example[name].numpy(), rtol=1e-6)
    gates = by_name["gate_weights"].numpy()
    assert gates.shape == (50, 2, 4)
    np.testing.assert_allclose(gates.sum(axis=-1), 1.0, rtol=1e-5)
    probabilities = by_name["click_probability"].numpy()
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert (by_name["engagement"].numpy() >= 0).all()


def test_score_in_saved_model_is_the_spec_score(trained_run):
    model = tf.saved_model.load(trained_run.export_path)
    files = split_files(trained_run.workdir, "eval")
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(20)]
    out = model.signatures["serving_default"](examples=tf.constant(serialized))
    expected = np.asarray(ranking_score(trained_run.spec, {k: out[k].numpy() for k in OUTPUTS[:2]}))
    np.testing.assert_allclose(out["score"].numpy(), expected, rtol=1e-6)
    # clicklog's score is a product: click probability x seconds = expected engagement
    np.testing.assert_allclose(expected, out["click_probability"].numpy() * out["engagement"].numpy(), rtol=1e-5)


def test_versions_increment_are_immutable_and_stale_staging_is_cleaned(trained_run, tmp_path):
    base = str(tmp_path / "export")
    model_base = os.path.join(base, "clicklog")
    killed = os.path.join(model_base, f"{STAGING_PREFIX}1-deadbeef", "variables")  # a killed export's leftover
    os.makedirs(killed)
    old = os.path.getmtime(killed) - 2 * STALE_AFTER_SECONDS
    for path in (killed, os.path.dirname(killed)):
        os.utime(path, (old, old))
    os.mkdir(os.path.join(model_base, "99999999999999999999"))  # beyond int64: not a version
    serving = trained_run.result.models.serving
    first = export_saved_model(trained_run.spec, serving, base)
    second = export_saved_model(trained_run.spec, serving, base)
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    assert existing_versions(model_base) == [1, 2]
    assert sorted(os.listdir(model_base)) == ["1", "2", "99999999999999999999"], "no staging directory is left"
    with pytest.raises(VersionExistsError) as error:
        export_saved_model(trained_run.spec, serving, base, version=2)
    assert isinstance(error.value, UserError) and isinstance(error.value, FileExistsError)
    message = str(error.value)
    assert "\n" not in message and second in message and "versions are immutable" in message
    assert "next free one, 3" in message


@pytest.mark.parametrize("version", [-1, 99999999999999999999, 2**63])
def test_export_refuses_versions_tf_serving_cannot_hold_before_writing(trained_run, tmp_path, version):
    base = tmp_path / "export"
    with pytest.raises(VersionError, match="int64 integers >= 0") as error:
        export_saved_model(trained_run.spec, trained_run.result.models.serving, str(base), version=version)
    assert isinstance(error.value, UserError)
    assert not base.exists(), "nothing is written for a refused version"


def test_task_predictions_undo_the_label_transform(trained_run):
    import dataclasses

    spec = trained_run.spec
    mse = dataclasses.replace(spec, tasks=tuple(
        dataclasses.replace(t, loss="mse", label_transform="log1p") if t.name == "engagement" else t for t in spec.tasks))
    outputs = {"click": np.array([[0.25]]), "engagement": np.array([[np.log1p(30.0)]])}
    predictions = task_predictions(mse, outputs)
    np.testing.assert_allclose(np.asarray(predictions["engagement"]), [30.0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ranking_score(mse, predictions)), [7.5], rtol=1e-5)
    # ziln (clicklog's loss): P(y > 0) * exp(mu + sigma^2 / 2), sigma = softplus(raw)
    ziln = {"click": outputs["click"], "engagement": np.array([[0.0, np.log(30.0), np.log(np.expm1(1.0))]])}
    expected = 0.5 * 30.0 * np.exp(0.5)
    served = task_predictions(dataclasses.replace(mse, tasks=spec.tasks), ziln)
    np.testing.assert_allclose(np.asarray(served["engagement"]), [expected], rtol=1e-5)
