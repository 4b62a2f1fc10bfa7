"""TF Serving's gRPC API over the REST server's models: ``PredictionService`` and ``ModelService``.

The servicers answer from the same :class:`~serving.models.ModelRegistry` as the REST endpoints
(:mod:`serving.routes`): the same loaded versions, the same :class:`~serving.models.Signature`
objects (hence the same batchers), the same checks of inputs against the served spec
(:mod:`serving.input_checks`) and of outputs for finiteness. Messages and stubs are the ones
``tensorflow-serving-api`` ships (``tensorflow_serving.apis``), so TF Serving's clients work
unchanged:

* ``PredictionService.Predict``: ``model_spec.name``, ``model_spec.version`` or
  ``model_spec.version_label`` (:meth:`ModelRegistry.resolve`; the newest loaded version when
  neither is set), ``signature_name`` (``serving_default`` when empty, or ``predict_raw``),
  ``inputs`` as TensorProtos (:mod:`serving.grpc_tensors`), ``output_filter``.
* ``PredictionService.GetModelMetadata``: ``metadata_field: "signature_def"`` -> the version's
  ``SignatureDefMap`` packed in an ``Any``.
* ``ModelService.GetModelStatus``: each version's state and error, as ``GET /v1/models/{name}``.

Errors take TF Serving's status codes (:mod:`serving.grpc_errors`): an unknown model or version
``NOT_FOUND``, an unknown version label, a bad input or field ``INVALID_ARGUMENT`` naming it, an unknown signature
``FAILED_PRECONDITION``, no loaded version yet, a draining server or a version unloaded while the
request waited ``UNAVAILABLE``, an overloaded server or a tensor above the message limit
``RESOURCE_EXHAUSTED``; only a bug is ``INTERNAL``. Predict counts in the REST server's requests in
progress (its concurrency limit and drain), as REST's model calls do; given the server's metrics,
every RPC counts in its Prometheus metrics, with the RPC's method name as ``endpoint`` and the gRPC
status name as ``code``.

:func:`start_grpc_server` binds and starts the server; the caller stops it (``server.stop(grace)``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from typing import TYPE_CHECKING, Callable

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from feature_specs.errors import UserError
from serving.batching import InFlight
from serving.contract import DEFAULT_SIGNATURE, EXAMPLES_INPUT, RANK_SIGNATURE
from serving.errors import RequestError
from serving.grpc_errors import Refused, answer
from serving.grpc_tensors import input_arrays, write_outputs
from serving.input_checks import checked_call
from serving.models import ModelRegistry, ServedVersion

if TYPE_CHECKING:
    from serving.metrics import ServerMetrics

log = logging.getLogger(__name__)

DEFAULT_GRPC_MAX_WORKERS = 64  # threads answering RPCs: one per request in progress, batched together
SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving answers

class GrpcBindError(UserError):
    """The gRPC port could not be bound (in use, or a host that is not this machine's)."""


# -- requests to versions --------------------------------------------------------------------------


def requested_version(registry: ModelRegistry, request: Message) -> tuple[int | None, str | None]:
    """``(version, label)`` a request's ``model_spec`` names; ``(None, None)`` for the newest.

    Args:
        registry: the served model.
        request: any request with a ``model_spec`` (``tensorflow.serving.ModelSpec``), whose
            ``version`` (Int64Value) or ``version_label`` picks the version.

    Raises:
        RequestError: 400 without a ``model_spec``; 404 for another model's name.
    """
    if not request.HasField("model_spec"):
        raise RequestError(f"missing model_spec: set model_spec.name to {registry.name!r}")
    spec = request.model_spec
    if spec.name != registry.name:
        raise RequestError(f"unknown model {spec.name!r}; this server serves {registry.name!r}", 404)
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        return None, spec.version_label
    return (spec.version.value if choice == "version" else None), None


def served_for(registry: ModelRegistry, request: Message) -> ServedVersion:
    """The loaded version a request names (see :func:`requested_version`).

    Raises:
        RequestError: as :func:`requested_version`.
        VersionNotServed: (:meth:`ModelRegistry.resolve`) for a version or label that is not
            served, or no loaded version yet.
    """
    version, label = requested_version(registry, request)
    return registry.resolve(version, label)


def response_spec(registry: ModelRegistry, served: ServedVersion, signature_name: str = "") -> model_pb2.ModelSpec:
    """The ``model_spec`` of a response: the model's name, the version that answered, the signature."""
    spec = model_pb2.ModelSpec(name=registry.name, signature_name=signature_name)
    spec.version.value = served.version
    return spec


def output_names(output_filter, outputs: list[str]) -> list[str]:
    """The outputs to answer: all of ``outputs`` (sorted), or those ``output_filter`` names.

    Raises:
        RequestError: 400 for a name that is no output of the signature, or one named twice.
    """
    if not output_filter:
        return outputs
    names = list(output_filter)
    unknown = sorted(set(names) - set(outputs))
    if unknown:
        raise RequestError(f"output_filter names unknown output(s) {unknown}; this signature outputs {outputs}")
    if len(set(names)) != len(names):
        raise RequestError(f"output_filter names an output more than once: {names}")
    return names


# -- the services ----------------------------------------------------------------------------------


class _Servicer:
    """What both services share: the registry they answer from and the metrics they count in.

    Args:
        registry: the served model's versions (already started).
        metrics: the server's metrics, or None to count nothing.
    """

    def __init__(self, registry: ModelRegistry, metrics: ServerMetrics | None = None):
        self.registry = registry
        self.metrics = metrics

    def _answer(self, context: grpc.ServicerContext, endpoint: str, request: Message,
                call: Callable[[Message], Message]) -> Message:
        """:func:`serving.grpc_errors.answer` of ``call(request)``, counted as ``endpoint``."""
        named = request.model_spec.name if request.HasField("model_spec") else ""
        model = named if named == self.registry.name else ""  # no label values made up by clients
        return answer(context, lambda: call(request), self.metrics, endpoint, model)


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata (Classify, Regress and
    MultiInference answer UNIMPLEMENTED: the exported signatures are predict signatures).

    Args:
        registry: the served model's versions (already started).
        max_elements: int. The most elements one input tensor may hold.
        in_flight: the server's requests in progress: read by the batchers, refusing requests past
            its limit or while the server drains. None counts nothing (the batchers then do not
            wait for gRPC requests being decoded).
        metrics: the server's metrics, or None.
    """

    def __init__(self, registry: ModelRegistry, max_elements: int, in_flight: InFlight | None = None,
                 metrics: ServerMetrics | None = None):
        super().__init__(registry, metrics)
        self.max_elements = max_elements
        self.in_flight = in_flight

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:  # noqa: N802 - the proto's name
        return self._answer(context, "Predict", request, self.predict)

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,  # noqa: N802
                         context: grpc.ServicerContext) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return self._answer(context, "GetModelMetadata", request, self.metadata)

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Runs the request's signature on its inputs.

        Counted in the server's requests in progress (``in_flight``) from decoding to answer, as
        REST's model calls are.

        Raises:
            RequestError, Refused: a client mistake (see the module docstring for the codes).
        """
        with self.in_flight if self.in_flight is not None else contextlib.nullcontext():
            return self._predict(request)

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        served = served_for(self.registry, request)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = served.signatures.get(name)
        if signature is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"serving signature key {name!r} not found; this model has {sorted(served.signatures)}")
        names = output_names(request.output_filter, signature.outputs)
        inputs = input_arrays(request.inputs, signature.inputs, self.max_elements)
        input_name = (lambda feature: feature) if name == RANK_SIGNATURE else (lambda feature: EXAMPLES_INPUT)
        outputs = checked_call(served, name, inputs,
                               lambda index, feature: f"row {index} of input {input_name(feature)!r}",
                               lambda index: f"row {index}", names)
        response = predict_pb2.PredictResponse(model_spec=response_spec(self.registry, served, name))
        write_outputs(response.outputs, outputs, names)
        return response

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """The version's ``signature_def`` map (the same one ``GET .../metadata`` prints).

        Raises:
            RequestError: 400 without ``metadata_field`` or with one other than ``signature_def``;
                the 404/503 of :func:`served_for`.
        """
        fields = list(request.metadata_field)
        if not fields:
            raise RequestError(f"GetModelMetadataRequest needs a metadata_field; this server answers {SIGNATURE_DEF!r}")
        unsupported = sorted(set(fields) - {SIGNATURE_DEF})
        if unsupported:
            raise RequestError(f"metadata field(s) {unsupported} are not supported; ask for {SIGNATURE_DEF!r}")
        served = served_for(self.registry, request)
        signatures = json_format.ParseDict({SIGNATURE_DEF: served.signature_def_json},
                                           get_model_metadata_pb2.SignatureDefMap())
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=response_spec(self.registry, served))
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response


class ModelStatusServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus (HandleReloadConfigRequest answers
    UNIMPLEMENTED: versions are reloaded from the model directory).

    Args:
        registry: the served model's versions.
        metrics: the server's metrics, or None.
    """

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,  # noqa: N802
                       context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
        return self._answer(context, "GetModelStatus", request, self.status)

    def status(self, request: get_model_status_pb2.GetModelStatusRequest) -> get_model_status_pb2.GetModelStatusResponse:
        """Every version seen on disk, newest first (or the one named, by number or label): state
        and error status.

        Raises:
            RequestError: 404 for a version never seen, or a model with no versions yet.
            UnknownVersionLabel: for a label the registry does not have.
        """
        registry = self.registry
        version, label = requested_version(registry, request)
        if label is not None:
            version = registry.label_version(label)
        statuses = registry.reported_statuses(version)
        return json_format.ParseDict({"model_version_status": [s.to_json() for s in statuses]},
                                     get_model_status_pb2.GetModelStatusResponse())


# -- the server ------------------------------------------------------------------------------------


def grpc_address(host: str, port: int) -> str:
    """``host:port`` as grpc binds it: an IPv6 literal in brackets (``[::1]:8500``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def start_grpc_server(registry: ModelRegistry, host: str, port: int, max_workers: int = DEFAULT_GRPC_MAX_WORKERS, *,
                      max_message_bytes: int, in_flight: InFlight | None = None, metrics: ServerMetrics | None = None,
                      reuse_port: bool = False) -> tuple[grpc.Server, int]:
    """Binds and starts TF Serving's gRPC services for ``registry``.

    Args:
        registry: the served model's versions (already started); shared with the REST server.
        host: str. Address to bind, e.g. ``127.0.0.1``, ``0.0.0.0``, ``::1``.
        port: int. Port to bind; 0 picks a free one (read it from the result).
        max_workers: int. Threads answering RPCs, one request each; it is also grpc's
            ``maximum_concurrent_rpcs``, so that RPCs beyond it are answered RESOURCE_EXHAUSTED at
            once instead of waiting in an unbounded queue.
        max_message_bytes: int. Largest request message accepted (grpc answers
            RESOURCE_EXHAUSTED above it); also the most elements one input tensor may hold.
        in_flight: the REST server's requests in progress (its ``in_flight``): pass it so that
            gRPC and REST requests batch together, share the concurrency limit and drain together.
        metrics: the REST server's metrics (its ``metrics``), counting every RPC; None for none.
        reuse_port: bool. Set ``SO_REUSEPORT`` so that several processes can bind the same port.

    Returns:
        ``(server, bound port)``. Stop it with ``server.stop(grace_seconds).wait()``: new RPCs are
        refused at once, those in progress have ``grace_seconds`` to finish.

    Raises:
        GrpcBindError: if ``host:port`` cannot be bound.
    """
    options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.so_reuseport", int(reuse_port))]
    executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="grpc")
    server = grpc.server(executor, options=options, maximum_concurrent_rpcs=max_workers)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry, max_message_bytes, in_flight, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(registry, metrics), server)
    address = grpc_address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc's "Failed to bind to address ..."
        bound = 0
    if not bound:
        executor.shutdown(wait=False)
        raise GrpcBindError(f"cannot serve gRPC on {address}: the port is in use or the host is not an address of "
                            "this machine; pick another --grpc-port or --host")
    server.start()
    log.info("gRPC PredictionService and ModelService for model %r at %s", registry.name, grpc_address(host, bound))
    return server, bound
