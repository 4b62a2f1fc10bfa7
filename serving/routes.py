"""The REST API's route table: which path and method run which endpoint, and the endpoints.

Endpoints (``{name}`` is the model name; ``/versions/{v}``, or ``/labels/{label}`` for a version
label of the registry (:mod:`serving.versions`), is optional and defaults to the newest loaded
version; ``[/versions/{v}]`` below stands for either):

* ``GET  /v1/models/{name}[/versions/{v}]``            model status, as TF Serving answers it
* ``GET  /v1/models/{name}[/versions/{v}]/metadata``   signature_def metadata, as TF Serving
* ``POST /v1/models/{name}[/versions/{v}]:predict``    ``instances`` (row) or ``inputs`` (columnar)
* ``POST /v1/models/{name}[/versions/{v}]:rank``       context + candidates -> sorted by score
* ``GET  /healthz`` (the process answers) and ``GET /readyz`` (a version is loaded, not draining)
* ``GET  /monitoring/prometheus/metrics``              Prometheus metrics (:mod:`serving.metrics`)

and the Open Inference Protocol v2 (KServe, Triton, Seldon; JSON translated by :mod:`serving.oip_v2`):

* ``GET  /v2``                                          server metadata (name, version, extensions)
* ``GET  /v2/health/live``, ``GET /v2/health/ready``    200 ``{"live"|"ready": true}``; not ready:
  400 (the protocol's 4xx) ``{"ready": false, "error"}``, before a version loads and while draining
* ``GET  /v2/models/{name}[/versions/{v}]``             model metadata: ``predict_raw``'s tensors
* ``GET  /v2/models/{name}[/versions/{v}]/ready``       200 ``{"name", "ready": true}``, else 4xx
* ``POST /v2/models/{name}[/versions/{v}]/infer``       tensors in, tensors out (``predict_raw``, or
  ``serving_default`` for ``examples``, or ``parameters.signature_name``)

To add an endpoint, write a function ``endpoint(call: Call) -> (status, body)`` below and add a
:class:`Route` to :data:`SERVER_ROUTES` (a fixed path) or :data:`MODEL_ROUTES` (an action after
``/v1/models/{name}[/versions/{v}]``; :data:`V2_MODEL_ROUTES` after ``/v2/models/...``). Requests are parsed by :mod:`serving.requests`, answers
encoded by :mod:`serving.responses`; HTTP itself (bodies, headers, errors) is
:mod:`serving.handler`'s job. Inputs are checked against the served spec
(:mod:`serving.input_checks`) before the model call, and outputs for finiteness after it
(:func:`serving.responses.check_finite`): a client's bad value is its own 400, and never makes the
batcher split a batch it shares with others.

:func:`resolve` finds a request's route, :func:`run` runs it: a route that calls the model counts
in the server's requests in progress (:class:`serving.batching.InFlight`), which refuses it, 503,
when the server is at its concurrency limit or draining. The handler labels its metrics with the
route's name (its endpoint function's name) and the version that answered (:attr:`Call.served`).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

from feature_specs.spec_nodes import quoted
from serving.contract import DEFAULT_SIGNATURE, MAX_VERSION, RANK_SIGNATURE
from serving.errors import MethodNotAllowed, RequestError
from serving.input_checks import check_ranges, checked_call
from serving.metrics import METRICS_CONTENT_TYPE, METRICS_PATH
from serving.models import ModelRegistry, ServedVersion, UnknownVersionLabel, VersionNotServed
from serving.oip_v2 import infer_response, infer_row, infer_where, model_metadata, output_specs, parse_infer
from serving.requests import parse_json_object, parse_predict, parse_rank, predict_rows, rank_sources
from serving.responses import check_finite, predict_response, rank_response_json

if TYPE_CHECKING:
    from serving.server import ModelServer

DISTRIBUTION = "mmoe-ranking"  # the installed package (pyproject.toml): the v2 server metadata's version

MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>/metadata|:[A-Za-z]+)?$"
)
V2_MODEL_PATH = re.compile(  # the Open Inference Protocol's model paths
    r"^/v2/models/(?P<name>[^/]+)"
    r"(?:/versions/(?P<version>[^/]+)|/labels/(?P<label>[^/]+))?"
    r"(?P<action>/ready|/infer)?$"
)


@dataclass
class Call:
    """One routed request, as an endpoint sees it.

    Args:
        server: the :class:`~serving.server.ModelServer` (its ``registry``, ``config``).
        version: the version named in the path; None for the newest (or a path without one).
        body: the request body, already read (``b""`` when there is none).
        model: the model named in the path; ``""`` for the server's own routes.
        label: the version label named in the path (``/labels/{label}``); None without one.
        served: the version that answers, once :meth:`served_version` found it (for the metrics).
    """

    server: ModelServer
    version: int | None
    body: bytes
    model: str = ""
    label: str | None = None
    served: ServedVersion | None = field(default=None, repr=False)

    @property
    def registry(self) -> ModelRegistry:
        return self.server.registry

    def served_version(self) -> ServedVersion:
        """:func:`served_version` for this call's version, remembered in :attr:`served`."""
        self.served = served_version(self.registry, self.version, self.label)
        return self.served


Endpoint = Callable[[Call], tuple[int, dict | bytes]]


@dataclass(frozen=True)
class Route:
    """One endpoint and the HTTP methods it answers.

    Args:
        methods: the methods allowed; any other is answered 405.
        endpoint: returns ``(HTTP status, body)``, the body a dict or JSON already encoded (or,
            with another ``content_type``, bytes of that type).
        model_call: whether it calls the model: counted in the server's requests in progress,
            which the batchers read and which refuse it past the server's limit or while it
            drains (:class:`serving.batching.InFlight`).
        content_type: the ``Content-Type`` of a successful answer; errors are always JSON.
    """

    methods: tuple[str, ...]
    endpoint: Endpoint
    model_call: bool = False
    content_type: str = "application/json"

    @property
    def name(self) -> str:
        """The endpoint's name (``rank``, ``predict``, ...): the metrics' ``endpoint`` label."""
        return self.endpoint.__name__


# -- endpoints -------------------------------------------------------------------------------------


def healthz(call: Call) -> tuple[int, dict]:
    """The process answers."""
    return 200, {"status": "ok"}


def readyz(call: Call) -> tuple[int, dict]:
    """200 once a version is loaded, 503 before and once the server drains (it is shutting down)."""
    registry = call.registry
    if call.server.in_flight.draining:
        return 503, {"status": "draining", "error": "the server is shutting down; send requests elsewhere"}
    versions = registry.versions()
    if versions:
        return 200, {"status": "ready", "model": registry.name, "versions": versions}
    return 503, {"status": "not ready", "error": f"no version of {registry.name!r} is loaded yet"}


def model_status(call: Call) -> tuple[int, dict]:
    """TF Serving's ``model_version_status`` of every version seen (or of the one named)."""
    registry, version = call.registry, call.version
    if call.label is not None:
        version = label_version(registry, call.label)
    return 200, {"model_version_status": [s.to_json() for s in registry.reported_statuses(version)]}


def metrics(call: Call) -> tuple[int, bytes]:
    """The server's metrics in Prometheus' text format (:class:`serving.metrics.ServerMetrics`)."""
    return 200, call.server.metrics.page()


def metadata(call: Call) -> tuple[int, dict]:
    """TF Serving's metadata: the version's ``signature_def`` map."""
    served = call.served_version()
    return 200, {
        "model_spec": {"name": call.registry.name, "signature_name": "", "version": str(served.version)},
        "metadata": {"signature_def": {
            "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
            "signature_def": served.signature_def_json,
        }},
    }


def predict(call: Call) -> tuple[int, dict]:
    """TF Serving's predict, on any signature (``signature_name``, default ``serving_default``)."""
    request = parse_json_object(call.body)
    served = call.served_version()
    name = request.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise RequestError(f"'signature_name' must be a string, got {json.dumps(name)[:40]}")
    signature = served.signatures.get(name)
    if signature is None:
        raise RequestError(f"unknown signature_name {name!r}; this model has {sorted(served.signatures)}", 400)
    inputs, fmt = parse_predict(request, signature.inputs)
    row = predict_rows(fmt)
    outputs = checked_call(served, name, inputs, lambda index, feature: row(index), row)
    return 200, predict_response(outputs, fmt)


def rank(call: Call) -> tuple[int, bytes]:
    """Context + candidates through ``predict_raw``, answered sorted by score."""
    request = parse_json_object(call.body)
    served = call.served_version()
    looked_up = served.spec.table_column_names
    inputs, top_k = parse_rank(request, served.columns, call.server.config.max_candidates, looked_up)
    check_ranges(inputs, served.columns, rank_sources(request), looked_up)
    outputs = served.signatures[RANK_SIGNATURE](inputs)
    check_finite(outputs, lambda index: f"candidates[{index}]")
    model_spec = {"name": call.registry.name, "version": str(served.version), "signature_name": RANK_SIGNATURE}
    return 200, rank_response_json(outputs, served.spec, top_k, model_spec)


def v2_server_metadata(call: Call) -> tuple[int, dict]:
    """The Open Inference Protocol's server metadata."""
    return 200, {"name": call.server.RequestHandlerClass.server_version,
                 "version": importlib.metadata.version(DISTRIBUTION), "extensions": []}


def v2_live(call: Call) -> tuple[int, dict]:
    """The process answers."""
    return 200, {"live": True}


def v2_ready(call: Call) -> tuple[int, dict]:
    """:func:`readyz` as the protocol answers it: 200, else 400 (the protocol's 4xx for false)."""
    status, body = readyz(call)
    if status == 200:
        return 200, {"ready": True}
    return 400, {"ready": False, "error": body["error"]}


def v2_model_metadata(call: Call) -> tuple[int, dict]:
    """The Open Inference Protocol's model metadata (:func:`serving.oip_v2.model_metadata`)."""
    served = call.served_version()
    return 200, model_metadata(call.registry.name, call.registry.versions(), served)


def v2_model_ready(call: Call) -> tuple[int, dict]:
    """200 when the version asked for (the newest without one) is loaded; else a 4xx saying why
    (404 for a version not served, 400 before any version loads or for an unknown label)."""
    try:
        call.served_version()
    except RequestError as error:
        return error.status if error.status < 500 else 400, {
            "name": call.registry.name, "ready": False, "error": str(error)}
    return 200, {"name": call.registry.name, "ready": True}


def v2_infer(call: Call) -> tuple[int, bytes]:
    """The Open Inference Protocol's inference (:func:`serving.oip_v2.parse_infer`), checked and
    batched as :func:`predict` is."""
    request = parse_json_object(call.body)
    served = call.served_version()
    infer = parse_infer(request, served.signatures)
    outputs = checked_call(served, infer.signature, infer.inputs, infer_where(infer.signature), infer_row)
    specs = output_specs(served.signatures[infer.signature])
    return 200, infer_response(call.registry.name, served.version, infer, outputs, specs)


def served_version(registry: ModelRegistry, version: int | None, label: str | None = None) -> ServedVersion:
    """The loaded version named by ``version`` or ``label`` (the newest when neither), else an
    error that says why (:meth:`~serving.models.ModelRegistry.resolve`): 400 for an unknown label
    (TF Serving's INVALID_ARGUMENT), 503 while nothing is loaded yet, 404 otherwise."""
    try:
        return registry.resolve(version, label)
    except UnknownVersionLabel as error:
        raise RequestError(str(error), 400) from None
    except VersionNotServed as error:
        raise RequestError(str(error), 503 if error.retryable else 404) from None


def label_version(registry: ModelRegistry, label: str) -> int:
    """The version ``label`` points to, else a 400 naming the registry's labels."""
    try:
        return registry.label_version(label)
    except UnknownVersionLabel as error:
        raise RequestError(str(error), 400) from None


# -- the table -------------------------------------------------------------------------------------

SERVER_ROUTES: Mapping[str, Route] = {
    "/healthz": Route(("GET", "HEAD"), healthz),
    "/readyz": Route(("GET", "HEAD"), readyz),
    METRICS_PATH: Route(("GET", "HEAD"), metrics, content_type=METRICS_CONTENT_TYPE),
    "/v2": Route(("GET", "HEAD"), v2_server_metadata),
    "/v2/health/live": Route(("GET", "HEAD"), v2_live),
    "/v2/health/ready": Route(("GET", "HEAD"), v2_ready),
}

MODEL_ROUTES: Mapping[str | None, Route] = {  # the action after /v1/models/{name}[/versions/{v}]
    None: Route(("GET", "HEAD"), model_status),
    "/metadata": Route(("GET", "HEAD"), metadata),
    ":predict": Route(("POST",), predict, model_call=True),
    ":rank": Route(("POST",), rank, model_call=True),
}

V2_MODEL_ROUTES: Mapping[str | None, Route] = {  # the action after /v2/models/{name}[/versions/{v}]
    None: Route(("GET", "HEAD"), v2_model_metadata),
    "/ready": Route(("GET", "HEAD"), v2_model_ready),
    "/infer": Route(("POST",), v2_infer, model_call=True),
}
MODEL_TABLES = ((MODEL_PATH, MODEL_ROUTES), (V2_MODEL_PATH, V2_MODEL_ROUTES))

# every method some route answers: any other (OPTIONS, TRACE, CONNECT, an unknown token) is a 405
METHODS = tuple(sorted({m for table in (SERVER_ROUTES, MODEL_ROUTES, V2_MODEL_ROUTES)
                       for r in table.values() for m in r.methods}))


def resolve(server: ModelServer, method: str, path: str, body: bytes) -> tuple[Route, Call]:
    """The route of ``path`` (query string allowed, ignored) and the call to run it with.

    Raises:
        RequestError: 404 for an unknown path, model, version or action; 405
            (:class:`~serving.errors.MethodNotAllowed`) when no route answers ``method`` and the
            path is unknown (e.g. CONNECT host:443, whose target is no path at all).
    """
    try:
        route, call = _resolve(server, path.split("?", 1)[0], body)
    except RequestError:
        if method not in METHODS:
            raise MethodNotAllowed(method, METHODS) from None
        raise
    return route, call


def run(route: Route, call: Call, method: str) -> tuple[int, dict | bytes]:
    """Runs ``route``'s endpoint for ``method``; a model call counts in the server's requests in
    progress.

    Raises:
        MethodNotAllowed: 405 for a method the route does not answer.
        Overloaded, ShuttingDown: (:mod:`serving.batching`) the server is at its concurrency limit
            or its batching queue is full, or it drains; the request did not run.
        RequestError: whatever the endpoint raises for a client mistake.
    """
    if method not in route.methods:
        raise MethodNotAllowed(method, route.methods)
    if route.model_call:
        with call.server.in_flight:
            return route.endpoint(call)
    return route.endpoint(call)


def _resolve(server: ModelServer, path: str, body: bytes) -> tuple[Route, Call]:
    if path in SERVER_ROUTES:
        return SERVER_ROUTES[path], Call(server, None, body)
    registry = server.registry
    for pattern, table in MODEL_TABLES:
        match = pattern.match(path)
        if match:
            break
    else:
        raise RequestError(f"no such endpoint {path!r}; see /v1/models/{registry.name} "
                           f"or /v2/models/{registry.name}", 404)
    if match["name"] != registry.name:
        raise RequestError(f"unknown model {match['name']!r}; this server serves {registry.name!r}", 404)
    version = _parse_version(match["version"])
    route = table.get(match["action"])
    if route is None:  # only the v1 path takes an action no route answers
        methods = " and ".join(action for action in MODEL_ROUTES if action and action.startswith(":"))
        raise RequestError(f"unsupported method {match['action'][1:]!r}; this server answers {methods}", 404)
    return route, Call(server, version, body, model=registry.name, label=match["label"])


def _parse_version(text: str | None) -> int | None:
    """The URL's ``/versions/<n>``: ASCII digits up to :data:`~serving.contract.MAX_VERSION` (TF
    Serving's int64), else a 400 (``str.isdigit`` alone would pass ``"²"``)."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_VERSION)) or int(text) > MAX_VERSION:
        raise RequestError(f"version must be an integer from 0 to {MAX_VERSION}, got {quoted(text)}")
    return int(text)
