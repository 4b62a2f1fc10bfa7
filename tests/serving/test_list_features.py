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


# -- REST: lists in :predict and :rank --------------------------------------------------------------


@pytest.fixture(scope="module")
def list_server(list_run):
    from serving.server import make_server

    spec, workdirs, _, _ = list_run
    with make_server(workdirs["parquet"].export_base, poll_seconds=0, max_candidates=100) as running:
        yield running


def post(url: str, path: str, body) -> tuple[int, dict]:
    import http.client

    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


CANDIDATES = [{"user": "u1", "price": 2.0, "tags": ["t1", "t3"]},
              {"user": "u2", "price": 5.0, "tags": []},
              {"user": "u3", "price": 1.0, "tags": ["t5", "t1", "t0", "t2", "t7"]},  # cut to max_length 4
              {"user": "u4", "price": 3.0, "tags": "t2,t4"}]  # text is split as the pipeline splits it


def test_rank_takes_lists_per_candidate_and_in_the_context(list_run, list_server):
    _, _, _, export_path = list_run
    status, body = post(list_server.url, "/v1/models/lists:rank", {"context": {"cats": [3, 999]}, "candidates": CANDIDATES})
    assert status == 200, body
    model = tf.saved_model.load(export_path)
    tags = [["t1", "t3"], [], ["t5", "t1", "t0", "t2"], ["t2", "t4"]]
    direct = model.signatures["predict_raw"](
        user=tf.constant([c["user"] for c in CANDIDATES]), price=tf.constant([c["price"] for c in CANDIDATES]),
        tags=tf.constant(padded(tags, "", 4)), cats=tf.constant(padded([[3, 999]] * 4, -1, 2)))
    got = [r["score"] for r in sorted(body["results"], key=lambda r: r["index"])]
    expected = direct["score"].numpy()
    np.testing.assert_allclose(np.array(got, dtype=float), expected, rtol=1e-5)


def test_predict_raw_over_rest_takes_rows_of_any_length(list_run, list_server):
    _, _, _, export_path = list_run
    instances = [{**c, "cats": cats} for c, cats in zip(CANDIDATES, [[1], [], [2, 3, 4], [5, 6]])]
    status, body = post(list_server.url, "/v1/models/lists:predict",
                        {"signature_name": "predict_raw", "instances": instances})
    assert status == 200, body
    columnar = {name: [i[name] for i in instances] for name in instances[0]}
    status, by_column = post(list_server.url, "/v1/models/lists:predict",
                             {"signature_name": "predict_raw", "inputs": columnar})
    assert status == 200, by_column
    scores = [p["score"] for p in body["predictions"]]
    np.testing.assert_allclose(by_column["outputs"]["score"], scores, rtol=1e-6)
    assert len(set(scores)) > 1


@pytest.mark.parametrize("change,path,message", [
    ({"tags": ["t1", 3.5]}, "rank", "candidates[1]: tags[1]: expected a string, got float 3.5"),
    ({"tags": ["", "t1"]}, "rank", "candidates[1]: tags[0]: list element is empty"),  # trailing "" pads
    ({"cats": [1, "x"]}, "rank", "candidates[1]: cats[1]: 'x' is not an integer"),
    ({"cats": [1, 2, 3, 4]}, "rank", "candidates[1]: cats: 4 elements, more than max_length 3"),
    ({"cats": [-4]}, "rank", "candidates[1]: cats[0]=-4: int list elements are >= 0"),
    ({"cats": [1, "x"]}, "predict", "instances[1]: cats[1]: 'x' is not an integer"),
    ({"tags": [["nested"]]}, "predict", "instances[1]: tags[0]: expected a string"),
])
def test_a_wrong_element_is_a_400_naming_the_row_and_field(list_server, change, path, message):
    rows = [dict(CANDIDATES[0], cats=[1]), {**CANDIDATES[1], "cats": [2], **change}]
    if path == "rank":
        status, body = post(list_server.url, "/v1/models/lists:rank", {"candidates": rows})
    else:
        status, body = post(list_server.url, "/v1/models/lists:predict", {"signature_name": "predict_raw", "instances": rows})
    assert status == 400, body
    assert body["error"].startswith(message), body["error"]


def test_serving_default_refuses_a_list_of_the_wrong_kind_naming_it(list_run):
    from serving.input_checks import check_examples
    from serving.errors import RequestError

    spec = list_run[0]
    example = tf.train.Example()
    example.features.feature["user"].bytes_list.value.append(b"u1")
    example.features.feature["price"].float_list.value.append(1.0)
    example.features.feature["cats"].float_list.value.extend([1.0, 2.0])
    with pytest.raises(RequestError, match="feature 'cats' holds a float_list; the spec's int list column needs a int64_list"):
        check_examples([example.SerializeToString()], serving_columns(spec), lambda i, f: f"examples[{i}]")


def test_grpc_style_dense_padded_lists_are_checked_and_padded_to_max_length(list_run):
    from serving.input_checks import padded_lists
    from serving.errors import RequestError

    spec = list_run[0]
    columns = serving_columns(spec)
    arrays = {"tags": np.array([[b"t1", b""], [b"", b""]], dtype=object), "cats": np.array([[5, -1, -1]], np.int64)}
    out = padded_lists(arrays, columns, lambda i, f: f"row {i}")
    assert out["tags"].tolist() == [[b"t1", b"", b"", b""], [b"", b"", b"", b""]]
    assert out["cats"].tolist() == [[5, -1, -1]]
    with pytest.raises(RequestError, match="row 0: tags\\[0\\]: list element is empty"):
        padded_lists({"tags": np.array([[b"", b"t1"]], dtype=object)}, columns, lambda i, f: f"row {i}")


def test_grpc_predict_raw_takes_dense_padded_lists_and_names_a_bad_element(list_run, list_server):
    import grpc
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

    from serving.grpc_service import start_grpc_server

    _, _, _, export_path = list_run
    server, port = start_grpc_server(list_server.registry, "127.0.0.1", 0, max_message_bytes=1 << 20)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def predict(tags, cats):
                request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="lists",
                                                                                    signature_name="predict_raw"))
                for key, value in {"user": np.array([b"u1", b"u2"], dtype=object), "price": np.array([1.0, 2.0], np.float32),
                                   "tags": tags, "cats": cats}.items():
                    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
                return stub.Predict(request, timeout=30)

            answer = predict(np.array([[b"t1", b""], [b"", b""]], dtype=object), np.array([[5, -1], [-1, -1]], np.int64))
            model = tf.saved_model.load(export_path)
            direct = model.signatures["predict_raw"](
                user=tf.constant([b"u1", b"u2"]), price=tf.constant([1.0, 2.0]),
                tags=tf.constant([[b"t1"], [b""]]), cats=tf.constant([[5], [-1]], tf.int64))
            np.testing.assert_allclose(tf.make_ndarray(answer.outputs["score"]), direct["score"].numpy(), rtol=1e-6)
            with pytest.raises(grpc.RpcError) as error:
                predict(np.array([[b"", b"t1"], [b"t2", b""]], dtype=object), np.array([[5], [6]], np.int64))
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "tags[0]: list element is empty" in error.value.details()
    finally:
        server.stop(grace=None)
