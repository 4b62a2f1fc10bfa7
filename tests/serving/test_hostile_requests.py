"""Hostile but fair clients (issue 22, items 1 and 2): values outside the spec's ranges, bytes that
are no tf.Example, non-finite model outputs, methods and request lines the server does not serve.

Every answer is a status line, headers and a strict JSON body; a client's mistake is a 4xx that
names it, checked before batching, so it never costs the other clients' batch.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import http.client
import json
import shutil
import socket
import threading

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.tensors import serving_columns
from mmoe.data import split_files
from serving.batching import Batcher
from serving.errors import RequestError
from serving.handler import model_error_reason
from serving.input_checks import check_examples, check_ranges
from serving.responses import check_finite, to_json_bytes
from serving.server import make_server

RANK = "/v1/models/clicklog:rank"
PREDICT = "/v1/models/clicklog:predict"
# the issue's request: user_age 1,000,000 (the spec's max is 120) answered Infinity and NaN
ISSUE_CONTEXT = {"user_id": "u42", "device": "mobile", "hour": 21, "user_age": 1000000}
ISSUE_CANDIDATE = {"item_id": "i7", "item_category": "c3", "item_price": 12.5, "item_popularity": 3.1}


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    shutil.copytree(trained_run.export_path, base / "clicklog" / "1")
    with make_server(str(base), poll_seconds=0, batch_timeout_ms=20) as running:
        yield running


@pytest.fixture(scope="module")
def examples(trained_run) -> list[bytes]:
    files = split_files(trained_run.workdir, "eval")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(16)]


@pytest.fixture(scope="module")
def columns(trained_run):
    return serving_columns(trained_run.spec)


def exchange(server, raw: bytes) -> tuple[bytes, dict, bytes]:
    """Sends ``raw`` bytes on a fresh connection; (status line, headers, body) of the first answer,
    which must carry a status line, ``Content-Length`` and a JSON content type."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        assert headers["Content-Type"] == "application/json", answer
        while len(body) < int(headers["Content-Length"]) and (chunk := sock.recv(65536)):
            body += chunk
    assert len(body) == int(headers["Content-Length"])
    return status.encode(), headers, body


def call(server, method: str, path: str, body=None) -> tuple[int, dict, dict]:
    """(status, headers, strict-JSON body) of one request; ``body`` a dict (as JSON) or bytes."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        connection.request(method, path, body=payload)
        response = connection.getresponse()
        text = response.read()
        return response.status, dict(response.getheaders()), json.loads(text, parse_constant=_not_json)
    finally:
        connection.close()


def _not_json(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def edited(example: bytes, **features) -> bytes:
    """``example`` with features replaced (a ``tf.train.Feature``) or removed (None)."""
    message = tf.train.Example.FromString(example)
    for name, feature in features.items():
        if feature is None:
            del message.features.feature[name]
        else:
            message.features.feature[name].CopyFrom(feature)
    return message.SerializeToString()


# -- item 1: the spec's ranges, and no NaN or Infinity out -----------------------------------------


def test_the_issues_out_of_range_request_is_a_400_naming_the_feature(server):
    for age in (1000000, 500, -1):
        status, _, body = call(server, "POST", RANK, {"context": {**ISSUE_CONTEXT, "user_age": age},
                                                      "candidates": [ISSUE_CANDIDATE]})
        assert status == 400, body
        bound = "above the maximum 120" if age > 0 else "below the minimum 0"
        assert body == {"error": f"context: user_age={age} is {bound}"}
    for age in (0, 120):  # the bounds themselves are in range
        status, _, body = call(server, "POST", RANK, {"context": {**ISSUE_CONTEXT, "user_age": age},
                                                      "candidates": [ISSUE_CANDIDATE]})
        assert status == 200 and np.isfinite(body["results"][0]["score"]), body


def test_a_candidates_out_of_range_value_is_named_by_its_index(server):
    context = {**ISSUE_CONTEXT, "user_age": 31}
    candidates = [ISSUE_CANDIDATE, {**ISSUE_CANDIDATE, "item_price": -0.5}, ISSUE_CANDIDATE]
    status, _, body = call(server, "POST", RANK, {"context": context, "candidates": candidates})
    assert status == 400 and body["error"] == "candidates[1]: item_price=-0.5 is below the minimum 0", body
    hour = [ISSUE_CANDIDATE, {**ISSUE_CANDIDATE, "hour": 24}]  # the candidate's own hour beats the context's
    status, _, body = call(server, "POST", RANK, {"context": context, "candidates": hour})
    assert status == 400 and body["error"] == "candidates[1]: hour=24 is above the maximum 23", body


def test_predict_raw_inputs_are_range_checked_in_both_formats(server, columns):
    row = {**ISSUE_CONTEXT, **ISSUE_CANDIDATE, "user_age": 31}
    rows = [row, {**row, "hour": -3}]
    status, _, body = call(server, "POST", PREDICT, {"signature_name": "predict_raw", "instances": rows})
    assert status == 400 and body["error"] == "instances[1]: hour=-3 is below the minimum 0", body
    by_column = {c.name: [r[c.name] for r in rows] for c in columns}
    status, _, body = call(server, "POST", PREDICT, {"signature_name": "predict_raw", "inputs": by_column})
    assert status == 400 and body["error"] == "row 1 of 'inputs': hour=-3 is below the minimum 0", body
    status, _, body = call(server, "POST", PREDICT, {"signature_name": "predict_raw", "instances": [row]})
    assert status == 200 and len(body["predictions"]) == 1


def test_range_checks_follow_the_pipelines_rules(columns):
    """float32 bounds as the model sees them, NaN refused, log1p's domain for log1p features."""
    by_name = {c.name: c for c in columns}
    where = lambda index, feature: f"row {index}"  # noqa: E731
    price = by_name["item_price"]  # log1p, min 0, max 100000
    check_ranges({"item_price": np.array([0.0, 1e5], np.float32)}, [price], where)
    with pytest.raises(RequestError, match=r"^row 1: item_price=3\.0+\d*e\+38 is above the maximum 100000$"):
        check_ranges({"item_price": np.array([0.0, 3e38], np.float32)}, [price], where)
    check_ranges({"item_price": np.array([0.0, 3e38], np.float32)}, [dataclasses.replace(price, max=None)], where)
    for value, message in [(np.nan, "row 1: item_price: nan is not a finite number"),
                           (np.inf, "row 1: item_price: inf is not a finite number"),
                           (-0.25, "row 1: item_price=-0.25 is below the minimum 0")]:
        with pytest.raises(RequestError, match="^" + message + "$"):
            check_ranges({"item_price": np.array([1.0, value], np.float32)}, [price], where)
    unbounded = dataclasses.replace(price, min=None)
    check_ranges({"item_price": np.array([-0.99], np.float32)}, [unbounded], where)
    with pytest.raises(RequestError, match=r"row 0: item_price=-1.0 is not above -1, so log1p is undefined"):
        check_ranges({"item_price": np.array([-1.0], np.float32)}, [unbounded], where)
    check_ranges({"hour": np.array([0, 23]), "item_id": np.array([b"x"], object)}, columns, where)


def test_non_finite_outputs_never_leave_the_server(server, monkeypatch):
    def overflowing(inputs):  # a model whose exponentials overflow on the second candidate
        rows = len(inputs["item_id"])
        engagement = np.array([3.0] + [np.inf] * (rows - 1), np.float32)
        return {"click_probability": np.zeros(rows, np.float32), "engagement": engagement,
                "score": np.zeros(rows, np.float32), "gate_weights": np.zeros((rows, 2, 4), np.float32)}

    signatures = server.registry.get().signatures
    fake = type("Overflowing", (), {"inputs": signatures["predict_raw"].inputs, "__call__": staticmethod(overflowing)})
    monkeypatch.setitem(signatures, "predict_raw", fake())
    request = {"context": {**ISSUE_CONTEXT, "user_age": 31}, "candidates": [ISSUE_CANDIDATE] * 2}
    status, _, body = call(server, "POST", RANK, request)
    assert status == 400, body
    assert body["error"].startswith("candidates[1]: the model's 'engagement' is inf, not a finite number"), body
    row = {**ISSUE_CONTEXT, **ISSUE_CANDIDATE, "user_age": 31}
    status, _, body = call(server, "POST", PREDICT, {"signature_name": "predict_raw", "instances": [row, row]})
    assert status == 400 and body["error"].startswith("instances[1]: the model's 'engagement' is inf"), body
    with pytest.raises(RequestError, match=r"^the request: the model's 'x' is nan"):
        check_finite({"x": np.float32(np.nan)}, str)
    with pytest.raises(ValueError, match="not JSON compliant"):
        to_json_bytes({"score": np.array([np.nan])})


# -- item 2: serialized examples that are not valid, checked before batching -----------------------


def test_bytes_that_are_no_tf_example_are_a_400_naming_the_instance(server, examples):
    status, _, body = call(server, "POST", PREDICT, {"instances": [b64(examples[0]), b64(b"\xff" * 50)]})
    assert status == 400 and body == {"error": "instances[1]: 50 bytes that do not parse as a serialized tf.Example"}
    status, _, body = call(server, "POST", PREDICT, {"inputs": [b64(examples[0]), b64(examples[1][:-3])]})
    assert status == 400 and body["error"].startswith("row 1 of 'inputs': "), body


def test_a_bad_examples_error_says_what_is_wrong(server, examples):
    feature = tf.train.Feature
    ints, floats = tf.train.Int64List, tf.train.FloatList
    cases = [
        (edited(examples[0], user_id=None), "instances[0]: feature 'user_id' (string) is missing from the tf.Example"),
        (edited(examples[0], user_id=feature()), "instances[0]: feature 'user_id' (string) is missing"),
        (edited(examples[0], user_age=feature(float_list=floats(value=[3.0]))),
         "instances[0]: feature 'user_age' holds a float_list; the spec's int column needs a int64_list"),
        (edited(examples[0], hour=feature(int64_list=ints(value=[3, 4]))),
         "instances[0]: feature 'hour' holds 2 values; expected exactly 1"),
        (edited(examples[0], user_age=feature(int64_list=ints())), "instances[0]: feature 'user_age' holds 0 values"),
        (edited(examples[0], user_age=feature(int64_list=ints(value=[1000000]))),
         "instances[0]: user_age=1000000 is above the maximum 120"),
        (edited(examples[0], item_price=feature(float_list=floats(value=[float("nan")]))),
         "instances[0]: item_price: nan is not a finite number"),
    ]
    for example, message in cases:
        status, _, body = call(server, "POST", PREDICT, {"instances": [b64(example)]})
        assert status == 400 and body["error"].startswith(message), (message, body)
    # an optional feature left out takes the spec's default, as tf.io.parse_example does
    status, _, without = call(server, "POST", PREDICT, {"instances": [b64(edited(examples[0], user_age=None))]})
    default = feature(int64_list=ints(value=[35]))
    explicit_request = {"instances": [b64(edited(examples[0], user_age=default))]}
    status_default, _, explicit = call(server, "POST", PREDICT, explicit_request)
    assert status == status_default == 200 and without == explicit


def test_check_examples_accepts_what_the_model_parses(examples, columns):
    check_examples(examples, columns, lambda index, feature: f"instances[{index}]")


def test_bad_requests_are_refused_before_they_reach_the_batcher(server, examples):
    """Good and bad clients at once: the bad ones get their 400, and no batched call ever fails
    (the issue: every batch holding a bad request was rerun one request at a time)."""
    batcher = server.registry.get().signatures["serving_default"].batcher
    failed = []
    run = batcher._run

    def watched(inputs):
        try:
            return run(inputs)
        except Exception as error:
            failed.append(error)
            raise

    good = {"instances": [b64(e) for e in examples[:4]]}
    bad = {"instances": [b64(b"\xff" * 50)]}
    batcher._run = watched
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda body: call(server, "POST", PREDICT, body)[0], [good, bad] * 24))
    finally:
        batcher._run = run
    assert answers == [200, 400] * 24
    assert failed == []


def test_a_failing_batch_is_halved_not_rerun_request_by_request():
    calls = []

    def run(inputs):
        calls.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2}

    batcher = Batcher(run, max_size=16, timeout_ms=10_000)  # collects all 16 requests into one batch
    values = [np.array([i]) for i in range(15)] + [np.array([-1])]
    barrier = threading.Barrier(16)

    def submit(value):
        barrier.wait()
        return batcher.submit({"x": value})

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(submit, v) for v in values]
            results = [f.exception() or f.result() for f in futures]
    finally:
        batcher.close()
    # halves down to the bad request, wherever it sits in the batch; one at a time would be 1 + 16 calls
    assert sorted(calls, reverse=True) == [16, 8, 8, 4, 4, 2, 2, 1, 1]
    for value, result in zip(values[:-1], results[:-1]):
        np.testing.assert_array_equal(result["y"], value * 2)
    assert isinstance(results[-1], ValueError)


def test_the_models_own_error_says_what_is_wrong():
    heading = ("Graph execution error:\n\nDetected at node ParseExample/ParseExampleV2 defined at (most recent "
               "call last):\n<stack traces unavailable>\n")
    node = "\n\t [[{{node ParseExample/ParseExampleV2}}]] [Op:__inference_signature_wrapper_805]"
    message = heading + "Name: <unknown>, Key: user_age, Index: 0.  Data types don't match." + node
    assert model_error_reason(message) == "Key: user_age, Index: 0.  Data types don't match."
    assert model_error_reason("Graph execution error:") == "Graph execution error:"


# -- item 2: methods, request lines and headers ----------------------------------------------------


def test_methods_not_served_get_405_with_allow(server):
    for method in ("OPTIONS", "TRACE", "PATCH", "BREW"):
        status, headers, body = call(server, method, "/v1/models/clicklog")
        assert status == 405 and headers["Allow"] == "GET, HEAD", (method, body)
        assert body == {"error": f"{method} is not allowed here; use GET or HEAD"}
    status, headers, body = call(server, "OPTIONS", RANK)
    assert status == 405 and headers["Allow"] == "POST", body
    status_line, headers, body = exchange(server, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert status_line == b"HTTP/1.1 405 Method Not Allowed" and headers["Allow"] == "GET, HEAD, POST"
    assert json.loads(body)["error"].startswith("CONNECT is not allowed here")


def test_unparsable_request_lines_get_a_status_line(server):
    for raw, status in [(b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
                        (b"GET /healthz HTTP/1.1 extra\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
                        (b"GET /healthz HTTP/2.0\r\n\r\n", b"HTTP/1.1 505 HTTP Version Not Supported"),
                        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"HTTP/1.1 505 HTTP Version Not Supported")]:
        status_line, headers, body = exchange(server, raw)
        assert status_line == status and headers["Connection"] == "close", raw
        assert json.loads(body)["error"], raw


def test_content_length_must_be_one_number(server):
    head = b"POST /v1/models/clicklog:rank HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    status_line, _, body = exchange(server, head + b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert json.loads(body) == {"error": "conflicting Content-Length headers ['2', '5']; send one"}
    for length in (b"+2", b"2_0", b"-2", b"0x2"):
        status_line, _, body = exchange(server, head + b"Content-Length: " + length + b"\r\n\r\n{}")
        assert status_line == b"HTTP/1.1 400 Bad Request" and "invalid Content-Length" in json.loads(body)["error"]
    # the same value twice frames the body the same way: read as one
    status_line, _, body = exchange(server, head + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}")
    assert status_line == b"HTTP/1.1 400 Bad Request" and "missing 'candidates'" in json.loads(body)["error"]


def test_version_in_the_url_must_be_an_ascii_int64(server):
    for raw_version in (b"\xb2", b"\xd9\xa3", b"99999999999999999999", b"x1"):  # '²', Arabic-Indic 3, > int64
        status_line, _, body = exchange(
            server, b"GET /v1/models/clicklog/versions/" + raw_version + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_line == b"HTTP/1.1 400 Bad Request", raw_version
        assert "version must be an integer from 0 to 9223372036854775807" in json.loads(body)["error"]
    status, _, body = call(server, "GET", "/v1/models/clicklog/versions/9223372036854775807")
    assert status == 404 and "version 9223372036854775807" in body["error"]
