"""The Open Inference Protocol v2 REST endpoints over real HTTP on a loopback port.

The protocol's documented shapes: health ``{"live"|"ready": bool}``, model metadata ``{"name",
"versions", "platform", "inputs", "outputs"}`` of ``{"name", "datatype", "shape"}``, model ready
``{"name", "ready"}``, inference ``{"id", "inputs": [{"name", "shape", "datatype", "data"}],
"outputs": [{"name"}]}`` answered ``{"model_name", "model_version", "id", "outputs": [{"name",
"shape", "datatype", "data"}]}``, errors ``{"error": "..."}`` with a 4xx.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.tensors import TF_DTYPES, serving_columns
from mmoe.data import split_files
from serving.server import make_server

MODEL = "clicklog"
ROWS = 6
OIP_DATATYPES = {tf.string: "BYTES", tf.int64: "INT64", tf.float32: "FP32"}  # as the protocol names them


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """Versions 1 and 2 (the same export) served, ``stable`` labelling version 1."""
    base = tmp_path_factory.mktemp("oip_v2")
    for version in ("1", "2"):
        shutil.copytree(trained_run.export_path, base / MODEL / version)
    with make_server(str(base), MODEL, poll_seconds=0, versions="all", version_labels="stable=1") as running:
        yield running


@pytest.fixture(scope="module")
def examples(trained_run) -> list[bytes]:
    files = split_files(trained_run.workdir, "eval")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(ROWS)]


@pytest.fixture(scope="module")
def columns(trained_run, examples) -> dict[str, list]:
    """The examples' serving features by name, as JSON values (strings decoded)."""
    features = {c.name: tf.io.FixedLenFeature([], TF_DTYPES[c.dtype]) for c in serving_columns(trained_run.spec)}
    parsed = tf.io.parse_example(examples, features)
    return {name: [v.decode() if isinstance(v, bytes) else v for v in values.numpy().tolist()]
            for name, values in parsed.items()}


def call(server, method: str, path: str, body=None) -> tuple[int, dict]:
    """(status, JSON body) of one request; the answer must be strict JSON."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        payload = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read(), parse_constant=lambda c: pytest.fail(c))
    finally:
        connection.close()


def raw_inputs(trained_run, columns: dict[str, list]) -> list[dict]:
    """predict_raw's inputs as the protocol's input tensors, flat ``data``."""
    return [{"name": c.name, "shape": [ROWS], "datatype": OIP_DATATYPES[TF_DTYPES[c.dtype]], "data": columns[c.name]}
            for c in serving_columns(trained_run.spec)]


def test_health_and_server_metadata(server):
    assert call(server, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(server, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, metadata = call(server, "GET", "/v2")
    assert status == 200 and metadata["name"] == "mmoe-serving" and metadata["extensions"] == []
    assert isinstance(metadata["version"], str) and metadata["version"]


def test_model_metadata_lists_predict_raw_tensors_with_datatypes_and_shapes(server, trained_run):
    status, metadata = call(server, "GET", f"/v2/models/{MODEL}")
    assert status == 200
    assert set(metadata) == {"name", "versions", "platform", "inputs", "outputs"}
    assert metadata["name"] == MODEL and metadata["versions"] == ["1", "2"]
    assert metadata["platform"] == "tensorflow_savedmodel"
    expected_inputs = [{"name": c.name, "datatype": OIP_DATATYPES[TF_DTYPES[c.dtype]], "shape": [-1]}
                       for c in sorted(serving_columns(trained_run.spec), key=lambda c: c.name)]
    assert metadata["inputs"] == expected_inputs
    outputs = {o["name"]: o for o in metadata["outputs"]}
    assert {"click_probability", "engagement", "score"} <= set(outputs)
    assert outputs["score"] == {"name": "score", "datatype": "FP32", "shape": [-1]}
    assert call(server, "GET", f"/v2/models/{MODEL}/versions/1") == (200, metadata)


def test_model_ready_by_version_and_label(server):
    assert call(server, "GET", f"/v2/models/{MODEL}/ready") == (200, {"name": MODEL, "ready": True})
    assert call(server, "GET", f"/v2/models/{MODEL}/versions/2/ready") == (200, {"name": MODEL, "ready": True})
    assert call(server, "GET", f"/v2/models/{MODEL}/labels/stable/ready") == (200, {"name": MODEL, "ready": True})
    status, body = call(server, "GET", f"/v2/models/{MODEL}/versions/7/ready")
    assert status == 404 and body["ready"] is False and "version 7" in body["error"]


def test_infer_follows_the_documented_shapes_and_equals_predict_raw(server, trained_run, columns):
    request = {"id": "42", "inputs": raw_inputs(trained_run, columns), "outputs": [{"name": "score"}]}
    status, answer = call(server, "POST", f"/v2/models/{MODEL}/versions/1/infer", request)
    assert status == 200, answer
    assert answer["model_name"] == MODEL and answer["model_version"] == "1" and answer["id"] == "42"
    assert [o["name"] for o in answer["outputs"]] == ["score"]
    (score,) = answer["outputs"]
    assert score["datatype"] == "FP32" and score["shape"] == [ROWS] and len(score["data"]) == ROWS

    names = [c.name for c in serving_columns(trained_run.spec)]
    predict = {"signature_name": "predict_raw", "inputs": {n: columns[n] for n in names}}
    status, expected = call(server, "POST", f"/v1/models/{MODEL}/versions/1:predict", predict)
    assert status == 200, expected
    assert score["data"] == expected["outputs"]["score"]

    status, everything = call(server, "POST", f"/v2/models/{MODEL}/infer", {"inputs": request["inputs"]})
    assert status == 200 and "id" not in everything and everything["model_version"] == "2"
    by_name = {o["name"]: o for o in everything["outputs"]}
    assert set(by_name) == set(expected["outputs"])
    for name, values in expected["outputs"].items():
        assert np.reshape(by_name[name]["data"], by_name[name]["shape"]).tolist() == values


def test_infer_takes_nested_data_and_labels(server, trained_run, columns):
    inputs = raw_inputs(trained_run, columns)
    nested = [dict(i, data=[i["data"][:3], i["data"][3:]]) for i in inputs]  # row-major: the same values
    flat = call(server, "POST", f"/v2/models/{MODEL}/infer", {"inputs": inputs})
    status, answer = call(server, "POST", f"/v2/models/{MODEL}/labels/stable/infer", {"inputs": nested})
    assert status == 200 and answer["model_version"] == "1"
    assert answer["outputs"] == flat[1]["outputs"]


def test_infer_with_examples_runs_serving_default(server, examples):
    request = {"inputs": [{"name": "examples", "shape": [ROWS], "datatype": "BYTES",
                           "data": [{"b64": base64.b64encode(e).decode()} for e in examples]}]}
    status, answer = call(server, "POST", f"/v2/models/{MODEL}/infer", request)
    assert status == 200, answer
    predict = {"inputs": {"examples": request["inputs"][0]["data"]}}
    status, expected = call(server, "POST", f"/v1/models/{MODEL}:predict", predict)
    assert status == 200
    assert {o["name"]: o["data"] for o in answer["outputs"]} == expected["outputs"]


@pytest.mark.parametrize(("path", "change", "status", "message"), [
    ("/v2/models/nope/infer", None, 404, "unknown model 'nope'"),
    (f"/v2/models/{MODEL}/versions/9/infer", None, 404, "version 9"),
    (f"/v2/models/{MODEL}/labels/zz/infer", None, 400, "no version label"),
    (f"/v2/models/{MODEL}/infer", {"datatype": "FP64"}, 400, "does not match the signature's"),
    (f"/v2/models/{MODEL}/infer", {"datatype": "FLOAT"}, 400, "is not a datatype of the protocol"),
    (f"/v2/models/{MODEL}/infer", {"shape": [ROWS + 1]}, 400, "holds 7 value(s), 'data' has 6"),
    (f"/v2/models/{MODEL}/infer", {"shape": [2, 3]}, 400, "does not fit the signature's [-1]"),
    (f"/v2/models/{MODEL}/infer", {"name": "nope"}, 400, "unknown input \"nope\""),
    (f"/v2/models/{MODEL}/infer", {"data": "x"}, 400, "'data' must be an array"),
    (f"/v2/models/{MODEL}/infer", {"parameters": {"binary_data_size": 8}}, 400, "binary data extension"),
])
def test_infer_errors_are_4xx_json(server, trained_run, columns, path, change, status, message):
    inputs = raw_inputs(trained_run, columns)
    if change is not None:
        float_input = next(i for i in inputs if i["datatype"] == "FP32")
        float_input.update(change)
    got, body = call(server, "POST", path, {"inputs": inputs})
    assert (got, set(body)) == (status, {"error"}), body
    assert message in body["error"]


def test_infer_request_mistakes_name_the_field(server, trained_run, columns):
    inputs = raw_inputs(trained_run, columns)
    cases = [
        ({"inputs": inputs[1:]}, f"missing input(s) ['{inputs[0]['name']}']"),
        ({"inputs": inputs + inputs[:1]}, "is given twice"),
        ({"inputs": inputs, "outputs": [{"name": "nope"}]}, "unknown output \"nope\""),
        ({"inputs": inputs, "parameters": {"signature_name": "nope"}}, "unknown signature_name 'nope'"),
        ({"inputs": inputs, "extra": 1}, "unknown request field(s) ['extra']"),
        ({"inputs": []}, "'inputs' must be a non-empty array"),
        ({"inputs": [dict(i, shape=[0], data=[]) for i in inputs]}, "no rows to infer"),
    ]
    for request, message in cases:
        status, body = call(server, "POST", f"/v2/models/{MODEL}/infer", request)
        assert status == 400 and message in body["error"], (request.keys(), body)
    status, body = call(server, "GET", f"/v2/models/{MODEL}/infer")
    assert status == 405 and "POST" in body["error"]


def test_infer_refuses_values_the_spec_rules_out(server, trained_run, columns):
    inputs = raw_inputs(trained_run, columns)
    bounded = next(c for c in serving_columns(trained_run.spec) if c.is_numeric and c.max is not None)
    tensor = next(i for i in inputs if i["name"] == bounded.name)
    tensor["data"] = list(tensor["data"])
    tensor["data"][3] = bounded.max * 10 + 1
    status, body = call(server, "POST", f"/v2/models/{MODEL}/infer", {"inputs": inputs})
    assert status == 400 and f"row 3 of input {bounded.name!r}" in body["error"], body
