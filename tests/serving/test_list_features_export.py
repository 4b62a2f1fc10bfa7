"""List features end to end: CSV, JSONL and Parquet logs -> Beam -> tf.Example -> training -> the
SavedModel, whose ``serving_default`` parses the variable-length features raw and whose
``predict_raw`` takes them padded; no training/serving skew, and a model that reloads."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec import LIST_PADDING
from feature_specs.tensors import parse_examples, serving_columns
from list_logs import list_rows, list_spec, write_log
from mmoe.data import split_files
from mmoe.evaluate import collect_predictions
from serving.export import export_saved_model
from test_export import STANDALONE_SCORER

OUTPUTS = ["click_probability", "engagement", "score"]
pytestmark = pytest.mark.slow  # three preprocess runs and a training: ~40 s on 2 cores


@pytest.fixture(scope="module")
def list_run(tmp_path_factory):
    """One run per input format on the same rows; the Parquet run is trained and exported."""
    from mmoe.train import train
    from pipelines.run import preprocess

    spec, rows = list_spec(), list_rows(400, seed=11)
    workdirs = {}
    for fmt in ("csv", "jsonl", "parquet"):
        workdir = Workdir(str(tmp_path_factory.mktemp(f"lists_{fmt}")))
        preprocess(spec, write_log(rows, workdir.raw_dir, fmt), workdir)
        workdirs[fmt] = workdir
    workdir = workdirs["parquet"]
    result = train(spec, workdir, verbose=0)
    export_path = export_saved_model(spec, result.models.serving, workdir.export_base)
    return spec, workdirs, result, export_path


def serialized(files, limit=None) -> list[bytes]:
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [r.numpy() for r in (records.take(limit) if limit else records)]


def test_every_format_gives_the_same_examples_and_the_served_model_scores_them_alike(list_run):
    spec, workdirs, result, export_path = list_run
    model = tf.saved_model.load(export_path)
    served = {}
    for fmt, workdir in workdirs.items():
        examples = sorted(serialized(split_files(workdir, "eval")))
        served[fmt] = model.signatures["serving_default"](examples=tf.constant(examples))
    for fmt in ("csv", "jsonl"):
        for name in OUTPUTS:
            np.testing.assert_array_equal(served[fmt][name].numpy(), served["parquet"][name].numpy(), err_msg=fmt)


def test_no_skew_in_a_tensorflow_only_process(list_run, tmp_path):
    spec, workdirs, result, export_path = list_run
    workdir = workdirs["parquet"]
    expected = collect_predictions(spec, result.models.serving, split_files(workdir, "eval"))
    assert expected["tags"].shape[1] == 4, "list columns are gathered padded to max_length"
    script = tmp_path / "score.py"
    script.write_text(STANDALONE_SCORER)
    run = subprocess.run([sys.executable, str(script), export_path, workdir.split_pattern("eval")],
                         capture_output=True, text=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = json.loads(run.stdout)["outputs"]
    for name in OUTPUTS:
        np.testing.assert_allclose(np.array(outputs[name]), expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def padded(rows: list[list], pad, width: int) -> np.ndarray:
    return np.array([list(r) + [pad] * (width - len(r)) for r in rows], dtype=object if isinstance(pad, str) else np.int64)


def test_predict_raw_takes_lists_padded_to_any_width(list_run):
    spec, workdirs, _, export_path = list_run
    model = tf.saved_model.load(export_path)
    examples = serialized(split_files(workdirs["parquet"], "eval"), 40)
    by_example = model.signatures["serving_default"](examples=tf.constant(examples))
    columns = serving_columns(spec)
    parsed = tf.io.parse_example(examples, {
        c.name: tf.io.RaggedFeature(tf.string if c.dtype == "string" else tf.int64) if c.is_list else
        tf.io.FixedLenFeature([], {"string": tf.string, "int": tf.int64, "float": tf.float32}[c.dtype])
        for c in columns})
    for width in (6, 4):  # wider than max_length (cut) or as wide
        raw = {}
        for c in columns:
            if c.is_list:
                rows = [[v.decode() if isinstance(v, bytes) else v for v in r] for r in parsed[c.name].to_list()]
                raw[c.name] = tf.constant(padded(rows, LIST_PADDING[c.dtype], max(width, max(map(len, rows)))))
            else:
                raw[c.name] = parsed[c.name]
        by_name = model.signatures["predict_raw"](**raw)
        for name in OUTPUTS:
            np.testing.assert_allclose(by_name[name].numpy(), by_example[name].numpy(), rtol=1e-6, err_msg=name)


def test_an_empty_or_left_out_list_scores_as_the_empty_list(list_run):
    spec, workdirs, _, export_path = list_run
    model = tf.saved_model.load(export_path)
    base = {"user": [b"u1"], "price": [1.5]}
    examples = []
    for tags in (None, []):
        example = tf.train.Example()
        for name, values in base.items():
            feature = example.features.feature[name]
            (feature.bytes_list if isinstance(values[0], bytes) else feature.float_list).value.extend(values)
        if tags is not None:
            example.features.feature["tags"].bytes_list.value.extend(tags)
            example.features.feature["cats"].int64_list.value.extend(tags)
        examples.append(example.SerializeToString())
    out = model.signatures["serving_default"](examples=tf.constant(examples))["click_probability"].numpy()
    assert out[0] == out[1]
    raw = model.signatures["predict_raw"](user=tf.constant([b"u1"]), price=tf.constant([1.5]),
                                          tags=tf.zeros([1, 0], tf.string), cats=tf.zeros([1, 0], tf.int64))
    np.testing.assert_allclose(raw["click_probability"].numpy(), out[:1], rtol=1e-6)


def test_the_trained_model_reloads_from_keras_file(list_run, tmp_path):
    spec, workdirs, result, _ = list_run
    path = str(tmp_path / "serving.keras")
    result.models.serving.save(path)
    reloaded = keras.saving.load_model(path)
    batch = parse_examples(tf.constant(serialized(split_files(workdirs["parquet"], "eval"), 16)), serving_columns(spec))
    before, after = result.models.serving(batch), reloaded(batch)
    for name in before:
        np.testing.assert_allclose(np.asarray(after[name]), np.asarray(before[name]), rtol=1e-6, err_msg=name)


def test_the_list_vocabulary_travels_with_the_saved_model(list_run):
    _, _, _, export_path = list_run
    assets = glob.glob(os.path.join(export_path, "assets", "*"))
    assert any("tags" in os.path.basename(a) for a in assets), assets
