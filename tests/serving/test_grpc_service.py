"""TF Serving's gRPC API over real sockets on loopback, driven by the stock tensorflow-serving-api stubs.

The gRPC server shares the REST server's registry (versions, signatures, batchers), so each answer is
compared with REST's and with the SavedModel called in process for the same rows.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import socket

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from feature_specs.errors import UserError
from feature_specs.tensors import TF_DTYPES, serving_columns
from mmoe.data import split_files
from serving.batching import InFlight, Overloaded, ShuttingDown, VersionUnloaded
from serving.client import Client, b64
from serving.contract import saved_model_path
from serving.errors import RequestError
from serving.grpc_errors import answer, grpc_code
from serving.grpc_service import GrpcBindError, start_grpc_server
from serving.grpc_tensors import input_array, write_tensor
from serving.models import ModelRegistry, UnknownVersionLabel, VersionNotServed
from serving.server import make_server

MODEL = "clicklog"
OUTPUTS = ["click_probability", "engagement", "score"]
MAX_MESSAGE = 256 * 1024
Code = grpc.StatusCode


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_examples(trained_run) -> list[bytes]:
    files = split_files(trained_run.workdir, "eval")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(40)]


@pytest.fixture(scope="module")
def raw_columns(trained_run, eval_examples) -> dict[str, np.ndarray]:
    """``predict_raw``'s inputs for the eval examples: feature name -> numpy column."""
    features = {c.name: tf.io.FixedLenFeature([], TF_DTYPES[c.dtype]) for c in serving_columns(trained_run.spec)}
    return {k: v.numpy() for k, v in tf.io.parse_example(eval_examples, features).items()}


@pytest.fixture(scope="module")
def saved_model(trained_run):
    return tf.saved_model.load(trained_run.export_path)


@pytest.fixture(scope="module")
def model_base(trained_run, tmp_path_factory) -> str:
    """Version 1 is the trained export; version 2 is broken (its load fails, reported END)."""
    base = tmp_path_factory.mktemp("grpc-served")
    shutil.copytree(trained_run.export_path, base / MODEL / "1")
    (base / MODEL / "2").mkdir()
    (base / MODEL / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    return str(base)


@pytest.fixture(scope="module")
def servers(model_base):
    """``(REST server, gRPC port)``: one registry behind both, as ``mmoe serve`` wires them."""
    with make_server(model_base, MODEL, poll_seconds=0, max_body_bytes=MAX_MESSAGE) as rest:
        server, port = start_grpc_server(rest.registry, "127.0.0.1", 0, max_message_bytes=MAX_MESSAGE,
                                         in_flight=rest.in_flight, metrics=rest.metrics)
        try:
            yield rest, port
        finally:
            server.stop(grace=None)


@pytest.fixture(scope="module")
def channel(servers):
    with grpc.insecure_channel(f"127.0.0.1:{servers[1]}") as opened:
        yield opened


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def rest_client(servers) -> Client:
    return Client(servers[0].url, MODEL)


def predict_request(inputs: dict, signature_name: str = "", version: int | None = None, name: str = MODEL,
                    output_filter=()) -> predict_pb2.PredictRequest:
    """A PredictRequest as TF Serving's documentation writes one: ``tf.make_tensor_proto`` per input."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name=signature_name),
                                         output_filter=list(output_filter))
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                     else tf.make_tensor_proto(value))
    return request


def int64_proto(dims: list[int], **fields) -> tensor_pb2.TensorProto:
    """A DT_INT64 TensorProto written by hand (values that no TensorFlow helper would write)."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, tensor_shape=shape, **fields)


def examples_input(examples: list[bytes]) -> dict:
    return {"examples": tf.make_tensor_proto(examples, dtype=tf.string)}


def outputs_of(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def json_column(values: np.ndarray) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]


def grpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


# -- Predict ---------------------------------------------------------------------------------------


def test_predict_serving_default_equals_rest_and_the_saved_model(predictions, rest_client, saved_model, eval_examples):
    examples = eval_examples[:20]
    response = predictions.Predict(predict_request(examples_input(examples)), timeout=30)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got = outputs_of(response)
    assert sorted(got) == OUTPUTS
    expected = saved_model.signatures["serving_default"](examples=tf.constant(examples))
    rest = rest_client.predict(inputs={"examples": [b64(e) for e in examples]})["outputs"]
    for name in OUTPUTS:
        assert got[name].dtype == np.float32 and got[name].shape == (20,), name
        np.testing.assert_allclose(got[name], expected[name].numpy(), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got[name], rest[name], rtol=1e-6, err_msg=name)
    pinned = predictions.Predict(predict_request(examples_input(examples), "serving_default", version=1), timeout=30)
    assert outputs_of(pinned).keys() == got.keys()


def test_predict_raw_equals_rest_and_the_saved_model_and_filters_outputs(predictions, rest_client, saved_model,
                                                                         raw_columns):
    columns = {name: values[:25] for name, values in raw_columns.items()}
    response = predictions.Predict(predict_request(columns, "predict_raw"), timeout=30)
    got = outputs_of(response)
    assert sorted(got) == sorted(OUTPUTS + ["gate_weights"])
    expected = saved_model.signatures["predict_raw"](**{k: tf.constant(v) for k, v in columns.items()})
    rest = rest_client.predict(inputs={k: json_column(v) for k, v in columns.items()},
                               signature_name="predict_raw")["outputs"]
    for name in got:
        np.testing.assert_allclose(got[name], expected[name].numpy(), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got[name], rest[name], rtol=1e-6, err_msg=name)
    assert got["gate_weights"].ndim == 3 and got["gate_weights"].shape[0] == 25
    filtered = predictions.Predict(predict_request(columns, "predict_raw", output_filter=["score"]), timeout=30)
    assert list(filtered.outputs) == ["score"]
    np.testing.assert_array_equal(outputs_of(filtered)["score"], got["score"])


def test_concurrent_grpc_and_rest_requests_share_the_batchers_and_each_get_their_rows(
        servers, predictions, rest_client, saved_model, eval_examples):
    expected = saved_model.signatures["serving_default"](examples=tf.constant(eval_examples))["score"].numpy()
    batcher = servers[0].registry.get(1).signatures["serving_default"].batcher
    calls_before = batcher.calls

    def one(index: int) -> tuple[int, np.ndarray]:
        rows = slice(index % 8 * 5, index % 8 * 5 + 5)
        if index % 2:
            return index, np.asarray(rest_client.predict(inputs=[b64(e) for e in eval_examples[rows]])["outputs"]["score"])
        response = predictions.Predict(predict_request(examples_input(eval_examples[rows])), timeout=30)
        return index, outputs_of(response)["score"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(48)))
    for index, scores in results:
        start = index % 8 * 5
        np.testing.assert_allclose(scores, expected[start:start + 5], rtol=1e-5, err_msg=str(index))
    assert batcher.calls > calls_before, "gRPC and REST requests go through the version's batcher"


def request_counts(rest) -> dict[tuple, float]:
    """``mmoe_serving_requests_total`` of the server's metrics page, by (endpoint, model, version, code)."""
    counts = {}
    for family in text_string_to_metric_families(rest.metrics.page().decode()):
        for sample in family.samples:
            if sample.name == "mmoe_serving_requests_total":
                labels = sample.labels
                counts[labels["endpoint"], labels["model"], labels["version"], labels["code"]] = sample.value
    return counts


def test_rpcs_are_counted_in_the_servers_prometheus_metrics(servers, predictions, models, eval_examples):
    rest = servers[0]
    before = request_counts(rest)
    for _ in range(3):
        predictions.Predict(predict_request(examples_input(eval_examples[:2])), timeout=30)
    grpc_error(predictions.Predict, predict_request(examples_input(eval_examples[:2]), version=7))
    grpc_error(predictions.Predict, predict_request(examples_input(eval_examples[:2]), name="made-up"))
    models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL)),
                          timeout=30)
    after = request_counts(rest)

    def moved(key):
        return after.get(key, 0) - before.get(key, 0)

    assert moved(("Predict", MODEL, "1", "OK")) == 3
    assert moved(("Predict", MODEL, "", "NOT_FOUND")) == 1
    assert moved(("Predict", "", "", "NOT_FOUND")) == 1, "a made-up model name is no label value"
    assert moved(("GetModelStatus", MODEL, "", "OK")) == 1


def test_a_broadcast_tensor_is_taken_as_tensorflow_writes_it(predictions, raw_columns):
    """``tf.make_tensor_proto(value, shape=[n])`` sends one value for n rows: it repeats."""
    columns = {name: values[:6] for name, values in raw_columns.items()}
    device = columns["device"][0]
    broadcast = {**columns, "device": tf.make_tensor_proto(device, dtype=tf.string, shape=[6])}
    assert len(broadcast["device"].string_val) == 1
    spelled_out = {**columns, "device": np.array([device] * 6, dtype=object)}
    got = outputs_of(predictions.Predict(predict_request(broadcast, "predict_raw"), timeout=30))
    want = outputs_of(predictions.Predict(predict_request(spelled_out, "predict_raw"), timeout=30))
    np.testing.assert_array_equal(got["score"], want["score"])


@pytest.mark.parametrize("values, dtype, field", [
    (np.array([b"a", b"\xff\x00", b""], dtype=object), tf.string, "string_val"),
    (np.array([3, -2**63, 2**63 - 1], np.int64), tf.int64, "int64_val"),
    (np.array([0.5, -3.4e38, 1e-30], np.float32), tf.float32, "float_val"),
])
def test_inputs_read_the_same_from_tensor_content_and_from_typed_values(values, dtype, field):
    """``tf.make_tensor_proto`` writes numpy numbers as tensor_content; other clients write *_val fields."""
    spec = tf.TensorSpec([None], dtype)
    from_numpy = tf.make_tensor_proto(values, dtype=dtype)
    typed = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum, tensor_shape=from_numpy.tensor_shape,
                                   **{field: values.tolist()})
    assert dtype == tf.string or (from_numpy.tensor_content and not typed.tensor_content)
    for proto in (from_numpy, typed):
        array = input_array("x", proto, spec, max_elements=10)
        assert array.dtype == (object if dtype == tf.string else values.dtype) and array.shape == (3,)
        assert array.tolist() == values.tolist()


@pytest.mark.parametrize("array", [
    np.linspace(0, 1, 100, dtype=np.float32),
    np.arange(-5, 5, dtype=np.int64),
    np.random.default_rng(0).random((7, 2, 4)).astype(np.float32),
    np.array([b"x", b"yz"], dtype=object),
])
def test_outputs_are_written_as_tf_make_tensor_proto_writes_them(array):
    written = tensor_pb2.TensorProto()
    write_tensor(written, array)
    assert written == tf.make_tensor_proto(array)
    np.testing.assert_array_equal(tf.make_ndarray(written), array)


# -- metadata and status ---------------------------------------------------------------------------


def test_metadata_packs_the_saved_models_signature_def_map(predictions, rest_client, trained_run):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL), metadata_field=["signature_def"])
    response = predictions.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signatures)
    saved = saved_model_pb2.SavedModel()
    with open(saved_model_path(trained_run.export_path), "rb") as handle:
        saved.ParseFromString(handle.read())
    on_disk = saved.meta_graphs[0].signature_def
    assert set(signatures.signature_def) == {"serving_default", "predict_raw"}
    for key, signature in signatures.signature_def.items():
        assert signature == on_disk[key], key
    rest = rest_client.metadata()["metadata"]["signature_def"]["signature_def"]
    assert json_format.MessageToDict(signatures, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)["signature_def"] == rest
    request.model_spec.version.value = 1
    assert predictions.GetModelMetadata(request, timeout=30) == response


def test_model_status_gives_each_versions_state_as_rest_does(models, rest_client):
    response = models.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL)), timeout=30)
    by_version = {s.version: s for s in response.model_version_status}
    assert sorted(by_version) == [1, 2]
    State = get_model_status_pb2.ModelVersionStatus.State
    assert by_version[1].state == State.AVAILABLE and by_version[1].status.error_code == 0
    assert by_version[2].state == State.END and by_version[2].status.error_code != 0
    assert by_version[2].status.error_message, "a failed load says why"
    assert json_format.MessageToDict(response, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True) == rest_client.status()
    one = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL))
    one.model_spec.version.value = 1
    assert list(models.GetModelStatus(one, timeout=30).model_version_status) == [by_version[1]]


# -- errors ----------------------------------------------------------------------------------------


def _with(columns: dict, **changes) -> dict:
    return {**{k: v[:4] for k, v in columns.items()}, **changes}


@pytest.mark.parametrize("case, code, words", [
    ("unknown model", Code.NOT_FOUND, ["unknown model 'nope'"]),
    ("unknown version", Code.NOT_FOUND, ["version 7"]),
    ("version that failed to load", Code.NOT_FOUND, ["version 2", "failed to load"]),
    ("version label", Code.INVALID_ARGUMENT, ["no version label 'stable'"]),
    ("no model_spec", Code.INVALID_ARGUMENT, ["model_spec"]),
    ("unknown signature", Code.FAILED_PRECONDITION, ["'classify'", "predict_raw"]),
    ("missing input", Code.INVALID_ARGUMENT, ["missing input(s) ['item_price']"]),
    ("unknown input", Code.INVALID_ARGUMENT, ["unknown input(s) ['colour']"]),
    ("wrong dtype", Code.INVALID_ARGUMENT, ["input 'item_price' is DT_DOUBLE", "DT_FLOAT"]),
    ("wrong rank", Code.INVALID_ARGUMENT, ["input 'hour' has shape [2, 2]", "[None]"]),
    ("more values than the shape holds", Code.INVALID_ARGUMENT, ["input 'hour'", "shape [4]"]),
    ("tensor_content of another size", Code.INVALID_ARGUMENT, ["input 'hour'", "shape [4]"]),
    ("no values", Code.INVALID_ARGUMENT, ["input 'hour' has shape [4] but holds no values"]),
    ("different batch sizes", Code.INVALID_ARGUMENT, ["different batch sizes"]),
    ("out of range", Code.INVALID_ARGUMENT, ["row 2 of input 'item_price'", "item_price"]),
    ("bytes that are no Example", Code.INVALID_ARGUMENT, ["row 1 of input 'examples'", "tf.Example"]),
    ("unknown output_filter", Code.INVALID_ARGUMENT, ["output_filter", "'ctr'"]),
    ("tensor above the message limit", Code.RESOURCE_EXHAUSTED, ["input 'examples'", "limit"]),
])
def test_client_mistakes_get_tf_servings_status_codes_naming_the_problem(predictions, raw_columns, eval_examples,
                                                                         case, code, words):
    raw = "predict_raw"
    price = raw_columns["item_price"][:4]
    requests = {
        "unknown model": lambda: predict_request(examples_input(eval_examples[:2]), name="nope"),
        "unknown version": lambda: predict_request(examples_input(eval_examples[:2]), version=7),
        "version that failed to load": lambda: predict_request(examples_input(eval_examples[:2]), version=2),
        "version label": lambda: predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=MODEL, version_label="stable")),
        "no model_spec": lambda: predict_pb2.PredictRequest(),
        "unknown signature": lambda: predict_request(examples_input(eval_examples[:2]), "classify"),
        "missing input": lambda: predict_request(
            {k: v[:4] for k, v in raw_columns.items() if k != "item_price"}, raw),
        "unknown input": lambda: predict_request(_with(raw_columns, colour=np.array([b"red"] * 4, object)), raw),
        "wrong dtype": lambda: predict_request(_with(raw_columns, item_price=price.astype(np.float64)), raw),
        "wrong rank": lambda: predict_request(_with(raw_columns, hour=raw_columns["hour"][:4].reshape(2, 2)), raw),
        "more values than the shape holds": lambda: predict_request(
            _with(raw_columns, hour=int64_proto([4], int64_val=[1, 2, 3, 4, 5])), raw),
        "tensor_content of another size": lambda: predict_request(
            _with(raw_columns, hour=int64_proto([4], tensor_content=np.arange(3, dtype=np.int64).tobytes())), raw),
        "no values": lambda: predict_request(_with(raw_columns, hour=int64_proto([4])), raw),
        "different batch sizes": lambda: predict_request(_with(raw_columns, item_price=price[:3]), raw),
        "out of range": lambda: predict_request(_with(raw_columns, item_price=np.array(
            [price[0], price[1], 3e38, price[3]], np.float32)), raw),
        "bytes that are no Example": lambda: predict_request(examples_input([eval_examples[0], b"\xff\xff\xff"])),
        "unknown output_filter": lambda: predict_request(examples_input(eval_examples[:2]), output_filter=["ctr"]),
        "tensor above the message limit": lambda: predict_request({"examples": tf.make_tensor_proto(
            eval_examples[0], dtype=tf.string, shape=[MAX_MESSAGE + 1])}),
    }
    error = grpc_error(predictions.Predict, requests[case]())
    assert error.code() == code, (case, error.details())
    for word in words:
        assert word in error.details(), (case, error.details())


def test_metadata_and_status_mistakes_get_their_codes(predictions, models):
    unsupported = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL), metadata_field=["signature_def", "graph"])
    error = grpc_error(predictions.GetModelMetadata, unsupported)
    assert error.code() == Code.INVALID_ARGUMENT and "['graph']" in error.details()
    unnamed = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_pb2.ModelSpec(name=MODEL))
    assert grpc_error(predictions.GetModelMetadata, unnamed).code() == Code.INVALID_ARGUMENT
    other = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_pb2.ModelSpec(name="nope"),
                                                           metadata_field=["signature_def"])
    assert grpc_error(predictions.GetModelMetadata, other).code() == Code.NOT_FOUND
    never_seen = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL))
    never_seen.model_spec.version.value = 9
    error = grpc_error(models.GetModelStatus, never_seen)
    assert error.code() == Code.NOT_FOUND and "version 9" in error.details()


def test_a_message_over_the_limit_is_refused_by_grpc_and_the_server_keeps_serving(predictions, eval_examples):
    huge = predict_request(examples_input([b"x" * (MAX_MESSAGE + 1)]))
    assert grpc_error(predictions.Predict, huge).code() == Code.RESOURCE_EXHAUSTED
    assert predictions.Predict(predict_request(examples_input(eval_examples[:1])), timeout=30).outputs


@pytest.fixture(scope="module")
def labelled(model_base):
    """``(gRPC port, its InFlight limited to 1 request)`` over a registry labelling version 1 ``stable``."""
    registry = ModelRegistry(f"{model_base}/{MODEL}", MODEL, poll_seconds=0, version_labels={"stable": 1})
    registry.start()
    in_flight = InFlight(limit=1)
    server, port = start_grpc_server(registry, "127.0.0.1", 0, max_message_bytes=MAX_MESSAGE, in_flight=in_flight)
    try:
        yield port, in_flight
    finally:
        server.stop(grace=None)
        registry.close()


def test_version_labels_pick_versions_as_in_tf_serving(labelled, eval_examples):
    with grpc.insecure_channel(f"127.0.0.1:{labelled[0]}") as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_request(examples_input(eval_examples[:3]))
        request.model_spec.version_label = "stable"
        response = predictions.Predict(request, timeout=30)
        assert response.model_spec.version.value == 1 and sorted(response.outputs) == OUTPUTS
        request.model_spec.version_label = "canary"
        error = grpc_error(predictions.Predict, request)
        assert error.code() == Code.INVALID_ARGUMENT and "stable=1" in error.details(), error.details()
        status = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=MODEL, version_label="stable"))
        statuses = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
        assert [s.version for s in statuses.model_version_status] == [1]


def test_past_the_concurrency_limit_predict_is_shed_with_retry_after_and_the_server_stays_up(labelled, eval_examples):
    port, in_flight = labelled
    request = predict_request(examples_input(eval_examples[:2]))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with in_flight:  # the one request the limit allows is in progress
            error = grpc_error(predictions.Predict, request)
            assert error.code() == Code.RESOURCE_EXHAUSTED and "limit of 1" in error.details()
            assert ("retry-after", "1") in tuple(error.trailing_metadata())
        assert predictions.Predict(request, timeout=30).outputs


def test_without_a_loaded_version_predict_is_unavailable_and_status_not_found(tmp_path, eval_examples):
    registry = ModelRegistry(str(tmp_path / MODEL), MODEL, poll_seconds=0)
    registry.start()
    server, port = start_grpc_server(registry, "127.0.0.1", 0, max_message_bytes=MAX_MESSAGE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            error = grpc_error(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict,
                               predict_request(examples_input(eval_examples[:1])))
            assert error.code() == Code.UNAVAILABLE and "no loaded version" in error.details()
            status = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL))
            assert grpc_error(model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus,
                              status).code() == Code.NOT_FOUND
    finally:
        server.stop(grace=None)
        registry.close()


class _Context:
    """The part of ``grpc.ServicerContext`` that :func:`answer` uses, recording the abort."""

    class Aborted(Exception):
        pass

    def __init__(self):
        self.metadata = ()

    def set_trailing_metadata(self, metadata):
        self.metadata = metadata

    def abort(self, code, details):
        self.code, self.details = code, details
        raise self.Aborted()


@pytest.mark.parametrize("error, code", [
    (VersionUnloaded("this model version was unloaded while the request waited; retry it"), Code.UNAVAILABLE),
    (Overloaded("the batching queue is full", "queue"), Code.RESOURCE_EXHAUSTED),
    (ShuttingDown("the server is shutting down"), Code.UNAVAILABLE),
    (VersionNotServed("model 'clicklog' has no loaded version yet", retryable=True), Code.UNAVAILABLE),
    (VersionNotServed("version 3 of model 'clicklog' is not available"), Code.NOT_FOUND),
    (UnknownVersionLabel("model 'clicklog' has no version label 'beta'; it has no labels"), Code.INVALID_ARGUMENT),
    (RequestError("too busy", 503, {"Retry-After": "1"}), Code.UNAVAILABLE),
    (RequestError("too large", 413), Code.RESOURCE_EXHAUSTED),
    (tf.errors.InvalidArgumentError(None, None, "Graph execution error:\n\nKey: hour, Index: 0.  Bad."),
     Code.INVALID_ARGUMENT),
    (ZeroDivisionError("a bug"), Code.INTERNAL),
])
def test_errors_map_to_status_codes_and_headers_to_trailing_metadata(error, code):
    context = _Context()

    def fail():
        raise error

    with pytest.raises(_Context.Aborted):
        answer(context, fail)
    assert context.code == code
    if isinstance(error, RequestError) and error.headers or isinstance(error, (Overloaded, ShuttingDown)):
        assert context.metadata == (("retry-after", "1"),)
    if isinstance(error, tf.errors.InvalidArgumentError):
        assert context.details == "the model rejected the input: Key: hour, Index: 0.  Bad."
    assert grpc_code(418) == Code.INVALID_ARGUMENT and grpc_code(502) == Code.UNAVAILABLE


def test_a_port_in_use_is_a_user_error(tmp_path):
    registry = ModelRegistry(str(tmp_path / MODEL), MODEL, poll_seconds=0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(GrpcBindError, match="--grpc-port") as caught:
            start_grpc_server(registry, "127.0.0.1", taken.getsockname()[1], max_message_bytes=MAX_MESSAGE)
    assert isinstance(caught.value, UserError)
