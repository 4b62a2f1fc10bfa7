"""The REST server over real HTTP on a loopback port: TF Serving's API, rank, batching, hot reload.

Feature names come from the spec (``serving_columns``); rows come from the run's eval split.
"""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, model_service_pb2_grpc, prediction_log_pb2

from feature_specs.tensors import TF_DTYPES, serving_columns
from mmoe.data import split_files
from serving.batching import Batcher
from serving.client import Client, ServingError, b64
from serving.contract import WARMUP_FILE, prediction_names
from serving.export import export_saved_model
from serving.handler import RequestHandler
from serving.models import resolve_model_dir
from serving.requests import parse_rank
from serving.responses import json_values, predict_response, rank_response, rank_response_json
from serving.server import make_server
from serving.warmup import write_warmup_requests

OUTPUTS = ["click_probability", "engagement", "score"]
MAX_BODY = 256 * 1024


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_examples(trained_run) -> list[bytes]:
    files = split_files(trained_run.workdir, "eval")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(400)]


@pytest.fixture(scope="module")
def eval_rows(trained_run, eval_examples) -> list[dict]:
    """The eval examples as plain dicts of the serving features, plus the ranking group id."""
    columns = serving_columns(trained_run.spec)
    group = trained_run.spec.ranking.group_by
    features = {c.name: tf.io.FixedLenFeature([], TF_DTYPES[c.dtype]) for c in columns}
    features[group] = tf.io.FixedLenFeature([], tf.string)
    parsed = {k: v.numpy() for k, v in tf.io.parse_example(eval_examples, features).items()}
    rows = []
    for i in range(len(eval_examples)):
        row = {}
        for name, values in parsed.items():
            value = values[i]
            row[name] = value.decode() if isinstance(value, bytes) else value.item()
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def saved_model(trained_run):
    return tf.saved_model.load(trained_run.export_path)


@pytest.fixture(scope="module")
def model_base(trained_run, tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("served")
    shutil.copytree(trained_run.export_path, base / "clicklog" / "1")
    return str(base)


@pytest.fixture(scope="module")
def server(model_base):
    with make_server(model_base, poll_seconds=0, max_body_bytes=MAX_BODY, max_candidates=1000) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, "clicklog")


def strict_json(payload: bytes):
    """``payload`` parsed as RFC 8259 JSON: NaN and Infinity, which Python's json takes, fail."""
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant} in {payload[:200]!r}")
    return json.loads(payload, parse_constant=refuse)


def http_call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON body) of one raw HTTP request; the body must be strict JSON (None for
    HEAD, whose answer has headers only)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        if method == "HEAD":
            assert payload == b"" and response.getheader("Content-Type") == "application/json"
            return response.status, None
        return response.status, strict_json(payload)
    finally:
        connection.close()


def post(url: str, path: str, body) -> tuple[int, dict]:
    return http_call(url, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})


def one_request(rows: list[dict], group_by: str) -> list[dict]:
    """The rows of the first request id with several candidates."""
    groups = collections.defaultdict(list)
    for row in rows:
        groups[row[group_by]].append(row)
    return max(groups.values(), key=len)


def rank_request(spec, rows: list[dict]) -> dict:
    """Features equal across all rows go to the context once; the rest stay per candidate."""
    names = [c.name for c in serving_columns(spec)]
    shared = [n for n in names if len({r[n] for r in rows}) == 1]
    return {
        "context": {n: rows[0][n] for n in shared},
        "candidates": [{n: r[n] for n in names if n not in shared} for r in rows],
    }


def direct_predict_raw(saved_model, spec, rows: list[dict]) -> dict:
    columns = serving_columns(spec)
    inputs = {c.name: tf.constant([r[c.name] for r in rows], dtype=TF_DTYPES[c.dtype]) for c in columns}
    return {k: v.numpy() for k, v in saved_model.signatures["predict_raw"](**inputs).items()}


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the server")


# -- TF Serving's API ------------------------------------------------------------------------------


def test_health_readiness_and_status(server, client):
    assert http_call(server.url, "GET", "/healthz") == (200, {"status": "ok"})
    status, ready = http_call(server.url, "GET", "/readyz")
    assert status == 200 and ready["versions"] == [1]
    available = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert client.status() == {"model_version_status": [available]}
    assert client.status(version=1) == {"model_version_status": [available]}
    assert client.ready()


def test_metadata_is_the_saved_models_signature_def(client, saved_model, trained_run):
    metadata = client.metadata()
    assert metadata["model_spec"] == {"name": "clicklog", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "predict_raw"}
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert default["inputs"]["examples"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert set(default["outputs"]) == set(OUTPUTS)
    raw = signatures["predict_raw"]
    assert set(raw["inputs"]) == {c.name for c in serving_columns(trained_run.spec)}
    assert set(raw["outputs"]) == set(OUTPUTS) | {"gate_weights"}
    assert client.metadata(version=1) == metadata


def test_predict_serving_default_with_b64_examples_row_and_columnar(client, saved_model, eval_examples):
    examples = eval_examples[:20]
    expected = saved_model.signatures["serving_default"](examples=tf.constant(examples))
    rows = client.predict(instances=[b64(e) for e in examples])["predictions"]
    named_rows = client.predict(instances=[{"examples": b64(e)} for e in examples], version=1)["predictions"]
    columns = client.predict(inputs={"examples": [b64(e) for e in examples]}, signature_name="serving_default")
    bare_columns = client.predict(inputs=[b64(e) for e in examples])["outputs"]
    assert rows == named_rows and len(rows) == 20
    for name in OUTPUTS:
        np.testing.assert_allclose([r[name] for r in rows], expected[name].numpy(), rtol=1e-5, err_msg=name)
        # float32 outputs arrive as their shortest decimals, not as float64 expansions
        assert all(r[name] == float(str(np.float32(r[name]))) for r in rows), name
        np.testing.assert_allclose(columns["outputs"][name], expected[name].numpy(), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(bare_columns[name], expected[name].numpy(), rtol=1e-5, err_msg=name)


def test_predict_raw_with_named_features_row_and_columnar(client, saved_model, trained_run, eval_rows):
    spec = trained_run.spec
    names = [c.name for c in serving_columns(spec)]
    rows = [{n: r[n] for n in names} for r in eval_rows[:15]]
    expected = direct_predict_raw(saved_model, spec, rows)
    by_row = client.predict(instances=rows, signature_name="predict_raw")["predictions"]
    by_column = client.predict(inputs={n: [r[n] for r in rows] for n in names}, signature_name="predict_raw")["outputs"]
    for name in OUTPUTS + ["gate_weights"]:
        np.testing.assert_allclose([r[name] for r in by_row], expected[name], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(by_column[name], expected[name], rtol=1e-5, err_msg=name)


def test_float32_outputs_are_written_as_their_shortest_decimals():
    values = np.array([0.1584, 1e-8, 3.4e38, -2.5, 123456.7], np.float32)
    assert values.tolist()[0] == 0.15839999914169312, "what tolist alone would send"
    assert json_values(values) == [0.1584, 1e-08, 3.4e38, -2.5, 123456.7]
    assert (np.array(json_values(values), np.float32) == values).all(), "each reads back as the same float32"
    assert json_values(np.float32(0.1)) == 0.1 and json_values(values.reshape(5, 1))[0] == [0.1584]
    assert json_values(np.array([0.1584], np.float64)) == [0.1584] and json_values(np.array([3], np.int64)) == [3]
    rows = predict_response({"score": values[:2], "id": np.array([1, 2])}, "row")["predictions"]
    assert rows == [{"id": 1, "score": 0.1584}, {"id": 2, "score": 1e-08}]


# -- rank ------------------------------------------------------------------------------------------


def test_rank_over_http_equals_the_saved_model(client, saved_model, trained_run, eval_rows):
    spec = trained_run.spec
    rows = one_request(eval_rows, spec.ranking.group_by)
    request = rank_request(spec, rows)
    assert request["context"], "a request's candidates share their user features"
    ranked = client.rank(request["context"], request["candidates"])
    expected = direct_predict_raw(saved_model, spec, rows)
    order = sorted(range(len(rows)), key=lambda i: (-expected["score"][i], i))
    assert [r["index"] for r in ranked] == order
    for name in OUTPUTS:
        np.testing.assert_allclose([r[name] for r in ranked], expected[name][order], rtol=1e-5, err_msg=name)
    assert client.rank(request["context"], request["candidates"], top_k=3) == ranked[:3]
    assert client.rank(request["context"], request["candidates"], top_k=10**12) == ranked


def test_rank_fills_optional_features_with_the_spec_default(client, trained_run, eval_rows):
    optional = [c for c in serving_columns(trained_run.spec) if not c.required]
    if not optional:
        pytest.skip("the spec has no optional serving feature")
    column = optional[0]
    rows = [dict(r) for r in eval_rows[:5]]
    names = [c.name for c in serving_columns(trained_run.spec)]
    with_default = [{n: r[n] for n in names if n != column.name} for r in rows]
    explicit = [{**c, column.name: column.default} for c in with_default]
    assert client.rank({}, with_default) == client.rank({}, explicit)


def test_rank_errors_name_the_problem(server, trained_run, eval_rows):
    columns = serving_columns(trained_run.spec)
    names = [c.name for c in columns]
    candidate = {n: eval_rows[0][n] for n in names}
    required = next(c for c in columns if c.required)
    wrong = {"string": 123, "int": "seven", "timestamp": 1.5, "float": "cheap"}
    path = "/v1/models/clicklog:rank"
    cases = [
        ({"context": {}, "candidates": [{k: v for k, v in candidate.items() if k != required.name}]},
         f"candidates[0]: missing feature '{required.name}'"),
        ({"candidates": [candidate, {**candidate, required.name: wrong[required.dtype]}]},
         f"candidates[1].{required.name}"),
        ({"context": {"no_such_feature": 1}, "candidates": [candidate]}, "unknown feature(s) ['no_such_feature']"),
        ({"context": {}, "candidates": []}, "'candidates' is empty"),
        ({"context": {}}, "missing 'candidates'"),
        ({"candidates": [candidate], "top_k": 0}, "'top_k' must be a positive integer"),
        ({"candidates": [candidate], "top_k": "3"}, "'top_k' must be a positive integer"),
        ({"candidates": "abc"}, "'candidates' must be a list"),
        ({"candidates": [candidate], "context": [1]}, "'context' must be an object"),
    ]
    for body, message in cases:
        status, response = post(server.url, path, body)
        assert status == 400, (body, response)
        assert message in response["error"], (message, response)
    status, response = post(server.url, path, {"candidates": [candidate] * 1001})
    assert status == 413 and "limit of 1000" in response["error"]


def test_a_bad_value_in_one_column_is_named_by_candidate_and_feature(server, trained_run, eval_rows):
    """Columns are converted in one vectorized step; a bad value still gets its own 400 naming it."""
    columns = serving_columns(trained_run.spec)
    names = [c.name for c in columns]
    candidates = [{n: eval_rows[i][n] for n in names} for i in range(10)]
    bad = {"string": [5, None, {"b64": "%%"}], "int": ["7", 2.5, 2**64, True, None],
           "timestamp": ["7", 2.5, -(2**63) - 1, False], "float": ["1.0", True, 1e39, None, [1.0]]}
    for column in columns:
        for value in bad[column.dtype]:
            changed = [dict(c) for c in candidates]
            changed[7][column.name] = value
            status, response = post(server.url, "/v1/models/clicklog:rank", {"candidates": changed})
            assert status == 400, (column.name, value, response)
            assert response["error"].startswith(f"candidates[7].{column.name}: "), (column.name, value, response)
            shared = [{k: v for k, v in c.items() if k != column.name} for c in candidates]
            status, response = post(server.url, "/v1/models/clicklog:rank",
                                    {"context": {column.name: value}, "candidates": shared})
            assert status == 400 and response["error"].startswith(f"context.{column.name}: "), response
    # A number no double can hold is refused by the JSON decoder itself, still as a client mistake.
    changed = [dict(c) for c in candidates]
    changed[7][names[0]] = 10**400
    status, response = post(server.url, "/v1/models/clicklog:rank", {"candidates": changed})
    assert status == 400 and response["error"].startswith("invalid JSON: number is infinity"), response


def test_rank_parsing_accepts_every_valid_form_with_the_signatures_dtypes(trained_run, eval_rows):
    """The vectorized path and the value-by-value fallback agree on what they accept and produce."""
    columns = serving_columns(trained_run.spec)
    names = [c.name for c in columns]
    rows = [{n: eval_rows[i][n] for n in names} for i in range(6)]
    loose = [dict(r) for r in rows]
    for column in columns:
        if column.dtype in ("int", "timestamp"):
            loose[2][column.name] = float(rows[2][column.name])  # 7.0 is an integer: the slow path takes it
        elif column.dtype == "float":
            loose[3][column.name] = int(rows[3][column.name])  # ints are numbers
            rows[3][column.name] = float(int(rows[3][column.name]))
    arrays, top_k = parse_rank({"candidates": loose, "top_k": 2}, columns, 100)
    assert top_k == 2 and list(arrays) == names
    for column in columns:
        dtype = TF_DTYPES[column.dtype]
        expected = [r[column.name].encode() if column.dtype == "string" else r[column.name] for r in rows]
        assert arrays[column.name].dtype == (object if dtype == tf.string else dtype.as_numpy_dtype), column.name
        np.testing.assert_array_equal(arrays[column.name], np.array(expected, dtype=arrays[column.name].dtype))


def test_rank_response_json_is_the_rank_response_with_float32_digits(trained_run):
    spec = trained_run.spec
    names = prediction_names(spec)
    rng = np.random.default_rng(0)
    outputs = {name: rng.uniform(0, 50, 40).astype(np.float32) for name in names}
    outputs["score"][[3, 9, 30]] = outputs["score"][5]  # ties keep the candidates' order
    model_spec = {"name": "clicklog", "version": "1", "signature_name": "predict_raw"}
    for top_k in (None, 7):
        fast = json.loads(rank_response_json(outputs, spec, top_k, model_spec))
        reference = rank_response(outputs, spec, top_k)
        assert fast["model_spec"] == model_spec and len(fast["results"]) == len(reference)
        for got, want in zip(fast["results"], reference):
            assert got["index"] == want["index"]
            for name in names:
                assert np.float32(got[name]) == np.float32(want[name]), (name, got, want)
        tied = [r["index"] for r in fast["results"] if r["index"] in (3, 5, 9, 30)]
        assert tied == sorted(tied) and (top_k is not None or len(tied) == 4)
    outputs["score"][0] = np.nan  # not JSON: refused (the rank endpoint answers such outputs 400 before)
    with pytest.raises(ValueError, match="not JSON compliant"):
        rank_response_json(outputs, spec, None, model_spec)


def test_keep_alive_serves_several_requests_on_one_connection(server, trained_run, eval_rows):
    names = [c.name for c in serving_columns(trained_run.spec)]
    good = json.dumps({"candidates": [{n: eval_rows[i][n] for n in names} for i in range(5)]}).encode()
    bad = json.dumps({"candidates": [{n: eval_rows[0][n] for n in names if n != names[0]}]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    sockets, answers = [], []
    try:
        for body in (good, bad, good):  # a client mistake does not cost the connection either
            connection.request("POST", "/v1/models/clicklog:rank", body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            assert response.version == 11 and response.getheader("Connection") is None
            assert int(response.getheader("Content-Length")) == len(payload)
            answers.append((response.status, json.loads(payload)))
            sockets.append(connection.sock)  # None had the server closed it (http.client would reconnect)
    finally:
        connection.close()
    assert sockets[0] is not None and all(sock is sockets[0] for sock in sockets)
    assert [status for status, _ in answers] == [200, 400, 200]
    assert answers[0] == answers[2] and f"missing feature '{names[0]}'" in answers[1][1]["error"]


def test_client_keeps_its_connection_and_reopens_one_the_server_closed(model_base, monkeypatch):
    monkeypatch.setattr(RequestHandler, "timeout", 0.3)  # the server drops connections idle this long
    with make_server(model_base, poll_seconds=0) as running:
        client = Client(running.url, "clicklog")
        assert client.ready()
        first = client._connection().sock
        with pytest.raises(ServingError) as error:
            client.rank({}, [])
        assert error.value.status == 400 and "'candidates' is empty" in error.value.message
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
        assert client._connection().sock is first  # three requests, one connection
        time.sleep(1.0)  # the server closes the idle connection; the next request reopens it
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
        assert client._connection().sock is not first
    assert not Client(running.url, "clicklog").ready()  # server gone: False, not an exception


def test_a_lone_surrogate_is_a_client_mistake(server):
    """JSON may escape a lone surrogate, which no UTF-8 string can hold: a 400 saying where it is."""
    status, response = http_call(server.url, "POST", "/v1/models/clicklog:predict", b'{"instances": ["\\ud800"]}')
    assert status == 400 and "invalid JSON" in response["error"] and "surrogate" in response["error"], response
    status, response = http_call(server.url, "GET", "/v1/models/clicklog")
    assert status == 200, "and the server keeps serving"


def test_client_mistakes_get_4xx_json_errors(server):
    url = server.url
    cases = [
        ("POST", "/v1/models/clicklog:predict", b"{not json", 400, "invalid JSON"),
        ("POST", "/v1/models/clicklog:predict", b"[1, 2]", 400, "must be a JSON object"),
        ("POST", "/v1/models/clicklog:predict", b'{"instances": [NaN]}', 400, "invalid JSON"),
        ("POST", "/v1/models/clicklog:predict", b'{"instances": [{"b64": "%%%"}]}', 400, "invalid base64"),
        ("POST", "/v1/models/clicklog:predict", b'{"instances": [{"b64": "aGVsbG8="}]}', 400,
         "instances[0]: 5 bytes that do not parse as a serialized tf.Example"),
        ("POST", "/v1/models/clicklog:predict", b'{"instances": [1]}', 400, "expected a string"),
        ("POST", "/v1/models/clicklog:predict", b'{"instances": []}', 400, "'instances' is empty"),
        ("POST", "/v1/models/clicklog:predict", b'{"instances": ["a"], "inputs": ["a"]}', 400, "exactly one"),
        ("POST", "/v1/models/clicklog:predict", b'{"signature_name": "nope", "instances": ["a"]}', 400,
         "unknown signature_name 'nope'"),
        ("POST", "/v1/models/clicklog:predict", b'{"signature_name": "predict_raw", "instances": [{"x": 1}]}', 400,
         "missing input(s)"),
        ("POST", "/v1/models/other:predict", b"{}", 404, "unknown model 'other'"),
        ("POST", "/v1/models/clicklog/versions/7:predict", b'{"instances": ["a"]}', 404, "version 7"),
        ("GET", "/v1/models/clicklog/versions/7", None, 404, "version 7"),
        ("GET", "/v1/models/clicklog/versions/x1/metadata", None, 400, "an integer from 0 to"),
        ("GET", "/v1/models/clicklog/labels/stable", None, 400, "no version label 'stable'"),
        ("POST", "/v1/models/clicklog:classify", b"{}", 404, "unsupported method 'classify'"),
        ("GET", "/v1/models/clicklog:predict", None, 405, "use POST"),
        ("DELETE", "/v1/models/clicklog", None, 405, "use GET"),
        ("GET", "/v2/anything", None, 404, "no such endpoint"),
    ]
    for method, path, body, expected_status, message in cases:
        status, response = http_call(url, method, path, body)
        assert status == expected_status, (path, body, response)
        assert message in response["error"], (message, response)
    status, response = http_call(url, "POST", "/v1/models/clicklog:predict", b"x" * (MAX_BODY + 1))
    assert status == 413 and "larger than the limit" in response["error"]
    assert http_call(url, "GET", "/healthz")[0] == 200


def test_serve_runs_in_the_foreground_until_sigterm(model_base):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = f"from serving.launch import serve; serve({model_base!r}, port={port}, poll_seconds=0, grpc_port=0)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner and "'clicklog'" in banner
        assert Client(f"http://127.0.0.1:{port}", "clicklog").ready()
        grpc_port = int(re.search(r"gRPC at 127\.0\.0\.1:(\d+)", banner)[1])  # the same versions over gRPC
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="clicklog")), timeout=30)
        assert [(v.version, v.state) for v in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_server_without_versions_is_live_but_not_ready(tmp_path):
    with make_server(str(tmp_path), "clicklog", poll_seconds=0) as empty:
        assert http_call(empty.url, "GET", "/healthz")[0] == 200
        status, body = http_call(empty.url, "GET", "/readyz")
        assert status == 503 and "no version" in body["error"]
        assert post(empty.url, "/v1/models/clicklog:rank", {"candidates": [{}]})[0] == 503
    with pytest.raises(FileNotFoundError, match="no SavedModel versions"):
        resolve_model_dir(str(tmp_path), None)


# numbers at and past every edge a feature's value can cross: the spec's bounds, log1p's -1,
# float32 and int64, subnormals, negative zero
_extreme = st.sampled_from([
    1e308, -1e308, 3.4028234663852886e38, 3.5e38, -3.5e38, 2**63 - 1, -(2**63), 2**63, 2**64, 5e-324, 1e-45,
    -0.0, -1, -1.0000001, -0.9999999, 0, 23, 24, 120, 121, 1e6, 1e30, 10**18, 0.5,
]) | st.floats(allow_nan=False, allow_infinity=False) | st.integers(min_value=-(2**64), max_value=2**64)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | _extreme
    | st.sampled_from([10**400, -(2**64), 1e308, 2**63, {"b64": "AA=="}, {"b64": 5}]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# every method a client may send: those served, those not (405), and tokens no server knows
_methods = st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]) \
    | st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_!~"), min_size=1, max_size=12)


def _mutated_example(data, example: bytes) -> bytes:
    """A serialized tf.Example cut short, with bytes overwritten, or replaced by random bytes."""
    how = data.draw(st.sampled_from(["truncate", "overwrite", "random"]))
    if how == "random":
        return data.draw(st.binary(max_size=80))
    cut = data.draw(st.integers(min_value=0, max_value=len(example)))
    if how == "truncate":
        return example[:cut]
    patch = data.draw(st.binary(min_size=1, max_size=8))
    return example[:cut] + patch + example[cut + len(patch):]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_requests_never_get_a_5xx(server, trained_run, eval_rows, eval_examples, data):
    """Whatever a client sends, the answer is strict JSON (no NaN/Infinity) and never a 5xx
    other than 503 (no such version loaded)."""
    columns = serving_columns(trained_run.spec)
    names = [c.name for c in columns]
    candidate = {n: eval_rows[0][n] for n in names}
    valid = {
        ":rank": {"context": {}, "candidates": [candidate], "top_k": 1},
        ":predict": {"signature_name": "predict_raw", "instances": [candidate]},
    }
    action = data.draw(st.sampled_from([":rank", ":predict", "/metadata", ""]))
    prefix = data.draw(st.sampled_from(["/v1/models/clicklog", "/v1/models/clicklog/versions/1",
                                        "/v1/models/clicklog/versions/99", "/v1/models/x"]))
    path = data.draw(st.one_of(
        st.just(prefix + action),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30).map(lambda t: "/" + t),
    ))
    body = valid.get(action, {})
    mutation = data.draw(st.sampled_from(["json", "field", "feature", "extreme", "example", "bytes", "top_k"]))
    if mutation == "json":
        raw = json.dumps(data.draw(_json)).encode()
    elif mutation == "field":
        key = data.draw(st.sampled_from(["context", "candidates", "instances", "inputs", "signature_name", "zz"]))
        raw = json.dumps({**body, key: data.draw(_json)}).encode()
    elif mutation in ("feature", "extreme"):
        feature = data.draw(st.sampled_from(names + ["unknown"]))
        changed = dict(candidate)
        if mutation == "extreme":
            changed[data.draw(st.sampled_from([c.name for c in columns if c.is_numeric]))] = data.draw(_extreme)
        elif data.draw(st.booleans()):
            changed.pop(feature, None)
        else:
            changed[feature] = data.draw(_json)
        key = "candidates" if action == ":rank" else "instances"
        raw = json.dumps({**body, key: [changed]}).encode()
    elif mutation == "example":  # serving_default's serialized tf.Examples, mangled
        examples = [eval_examples[0], _mutated_example(data, eval_examples[1])]
        raw = json.dumps({"instances": [b64(e) for e in data.draw(st.permutations(examples))]}).encode()
    elif mutation == "top_k":
        top_k = data.draw(st.integers(min_value=-(2**70), max_value=2**70) | _json)
        raw = json.dumps({**valid[":rank"], "top_k": top_k}).encode()
    else:
        raw = data.draw(st.binary(max_size=64))
    method = data.draw(_methods)
    status, response = http_call(server.url, method, path, raw)  # strict JSON, or it fails
    assert status < 500 or status == 503, (method, path, raw, response)
    if status >= 400 and method != "HEAD":
        assert isinstance(response.get("error"), str) and response["error"]


def test_server_survives_the_fuzzing(server):
    assert http_call(server.url, "GET", "/healthz")[0] == 200
    assert http_call(server.url, "GET", "/readyz")[0] == 200


# -- batching --------------------------------------------------------------------------------------


def test_concurrent_ranks_are_batched_and_each_gets_its_own_answer(server, client, trained_run, eval_rows):
    spec = trained_run.spec
    names = [c.name for c in serving_columns(spec)]
    requests = [[{n: r[n] for n in names} for r in eval_rows[i * 10:(i + 1) * 10]] for i in range(16)]
    alone = [client.rank({}, candidates) for candidates in requests]
    batcher = server.registry.get().signatures["predict_raw"].batcher
    assert batcher is not None
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda candidates: client.rank({}, candidates), requests))
    for one, other in zip(alone, together):
        assert [r["index"] for r in one] == [r["index"] for r in other]
        np.testing.assert_allclose([r["score"] for r in one], [r["score"] for r in other], rtol=1e-5)


def test_batcher_merges_waiting_requests_and_isolates_a_failing_one():
    def run(inputs):
        time.sleep(0.05)
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2}

    batcher = Batcher(run, max_size=100, timeout_ms=20)
    try:
        values = [np.arange(i, i + 3) for i in range(8)] + [np.array([-1])]
        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            futures = [pool.submit(batcher.submit, {"x": v}) for v in values]
            results = [f.exception() or f.result() for f in futures]
    finally:
        batcher.close()
    for value, result in zip(values[:-1], results[:-1]):
        np.testing.assert_array_equal(result["y"], value * 2)
    assert isinstance(results[-1], ValueError)
    assert batcher.calls < 9


def test_a_lone_request_runs_in_its_own_thread_without_waiting():
    threads = []

    def run(inputs):
        threads.append(threading.current_thread())
        return {"y": inputs["x"] + 1}

    batcher = Batcher(run, max_size=100, timeout_ms=5000, in_flight=lambda: 1)
    try:
        started = time.monotonic()
        np.testing.assert_array_equal(batcher.submit({"x": np.array([1, 2])})["y"], [2, 3])
        assert time.monotonic() - started < 1.0 and threads == [threading.current_thread()]
    finally:
        batcher.close()


# -- versions: hot reload, broken versions, warmup -------------------------------------------------


def test_warmup_file_decodes_as_prediction_logs(tmp_path, eval_examples):
    path = write_warmup_requests(str(tmp_path), eval_examples[:4], "clicklog")
    assert path == os.path.join(str(tmp_path), "assets.extra", WARMUP_FILE)
    records = [r.numpy() for r in tf.data.TFRecordDataset([path])]
    assert len(records) == 2
    for record, size in zip(records, (4, 1)):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "clicklog"
        assert request.model_spec.signature_name == "serving_default"
        assert list(tf.make_ndarray(request.inputs["examples"])) == eval_examples[:size]
    with pytest.raises(ValueError, match="at least one"):
        write_warmup_requests(str(tmp_path), [], "clicklog")


def test_new_versions_are_picked_up_and_broken_ones_do_not_take_the_model_down(trained_run, tmp_path, eval_rows,
                                                                             eval_examples):
    base = tmp_path / "export"
    shutil.copytree(trained_run.export_path, base / "clicklog" / "1")
    names = [c.name for c in serving_columns(trained_run.spec)]
    candidates = [{n: r[n] for n in names} for r in eval_rows[:5]]
    with make_server(str(base), "clicklog", poll_seconds=0.2) as running:
        client = Client(running.url, "clicklog")
        before = client.rank({}, candidates)

        path = export_saved_model(trained_run.spec, trained_run.result.models.serving, str(base),
                                  warmup_examples=eval_examples[:8])
        assert path.endswith("/clicklog/2")
        assert os.path.exists(os.path.join(path, "assets.extra", WARMUP_FILE))
        wait_for(lambda: running.registry.versions() == [2])  # latest:1: 2 replaces 1 once loaded
        status, body = post(running.url, "/v1/models/clicklog:rank", {"candidates": candidates})
        assert status == 200 and body["model_spec"]["version"] == "2"
        assert client.rank({}, candidates, version=2) == before  # the same model, exported again
        assert client.status(version=1)["model_version_status"][0]["state"] == "END"
        with pytest.raises(ServingError) as error:
            client.rank({}, candidates, version=1)
        assert error.value.status == 404 and "not available" in error.value.message

        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        broken.rename(base / "clicklog" / "3")
        wait_for(lambda: running.registry.status(3) is not None and running.registry.status(3).state == "END")
        state = client.status(version=3)["model_version_status"][0]
        assert state["state"] == "END" and state["status"]["error_code"] != "OK"
        assert "spec.json" in state["status"]["error_message"]
        assert running.registry.versions() == [2]  # the failed newest: 2 serves on
        status, body = post(running.url, "/v1/models/clicklog:rank", {"candidates": candidates})
        assert status == 200 and body["model_spec"]["version"] == "2"
        with pytest.raises(ServingError) as error:
            client.rank({}, candidates, version=3)
        assert error.value.status == 404 and "failed to load" in error.value.message
        assert http_call(running.url, "GET", "/readyz")[0] == 200
