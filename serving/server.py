"""The REST server: TF Serving's REST API for the exported models, plus a rank endpoint.

Endpoints (``{name}`` is the model name, ``/versions/{v}`` is optional and defaults to the newest
loaded version):

* ``GET  /v1/models/{name}[/versions/{v}]``            model status, as TF Serving answers it
* ``GET  /v1/models/{name}[/versions/{v}]/metadata``   signature_def metadata, as TF Serving
* ``POST /v1/models/{name}[/versions/{v}]:predict``    ``instances`` (row) or ``inputs`` (columnar)
* ``POST /v1/models/{name}[/versions/{v}]:rank``       context + candidates -> sorted by score
* ``GET  /healthz`` (the process answers) and ``GET /readyz`` (a version is loaded)

Built on the standard library's ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, one thread per
connection). Concurrent model calls are batched (:mod:`serving.batching`), versions are loaded
and hot-reloaded by :mod:`serving.models`, requests are validated by :mod:`serving.rest`.

Use :func:`serve` to run it in the foreground, :func:`make_server` (a context manager) to run it
in a background thread.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import re
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

import tensorflow as tf

from serving.batching import InFlight, VersionUnloaded
from serving.models import DEFAULT_SIGNATURE, RANK_SIGNATURE, ModelRegistry, ServedVersion, resolve_model_dir
from serving.rest import (
    RequestError,
    parse_json_object,
    parse_predict,
    parse_rank,
    predict_response,
    rank_response_json,
    to_json_bytes,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
DEFAULT_BATCH_MAX_SIZE = 4096  # rows (about 40 rank requests of 100 candidates)
DEFAULT_BATCH_TIMEOUT_MS = 2.0
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_CANDIDATES = 10_000
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # oversized bodies up to this size are read and dropped

MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>/metadata|:[A-Za-z]+)?$"
)


@dataclass(frozen=True)
class ServerConfig:
    """Limits and batching settings of one server.

    Args:
        batch_max_size: most rows per batched model call; 1 or less disables batching.
        batch_timeout_ms: longest time a request waits for others to join its batch.
        poll_seconds: how often the model directory is rescanned for new versions; 0 disables.
        max_body_bytes: larger request bodies are answered 413.
        max_candidates: rank requests with more candidates are answered 413.
    """

    batch_max_size: int = DEFAULT_BATCH_MAX_SIZE
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS
    poll_seconds: float = DEFAULT_POLL_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_candidates: int = DEFAULT_MAX_CANDIDATES


class ModelServer(http.server.ThreadingHTTPServer):
    """An HTTP server bound to one model's :class:`ModelRegistry`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: many clients may connect at once

    def __init__(self, address: tuple[str, int], registry: ModelRegistry, config: ServerConfig, in_flight: InFlight):
        super().__init__(address, RequestHandler)
        self.registry = registry
        self.config = config
        self.in_flight = in_flight

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """Routes one HTTP request; every error becomes JSON ``{"error": ...}``."""

    protocol_version = "HTTP/1.1"
    server_version = "mmoe-serving"
    disable_nagle_algorithm = True
    timeout = 120  # seconds a keep-alive connection may sit idle or stall mid-request
    server: ModelServer

    # -- plumbing ----------------------------------------------------------------------------------

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON errors for the failures ``http.server`` detects itself (bad request line, ...)."""
        self.close_connection = True
        self._send_json(code, {"error": message or explain or http.HTTPStatus(code).phrase})

    def _send_json(self, status: int, body: dict | bytes) -> None:
        """Answers ``body`` (a dict, or JSON already encoded) with its headers in one write."""
        payload = body if isinstance(body, bytes) else to_json_bytes(body)
        if self.request_version == "HTTP/0.9":  # no headers then (or the request line did not parse)
            self._send_unparsed(status, payload)
            return
        self.log_request(status)
        head = (f"{self.protocol_version} {status} {_phrase(status)}\r\n"
                f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                + ("Connection: close\r\n" if self.close_connection else "") + "\r\n")
        try:
            # one send: headers and body leave in one segment (TCP_NODELAY is set on the socket)
            self.wfile.write(head.encode("latin-1") + (b"" if self.command == "HEAD" else payload))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_unparsed(self, status: int, payload: bytes) -> None:
        """The answer through ``http.server``, which writes no headers for HTTP/0.9 requests and
        errors found before the request line was parsed."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise RequestError("chunked request bodies are not supported; send Content-Length", 411)
        length = self.headers.get("Content-Length")
        if length is None:
            if self.command == "POST":
                raise RequestError("a POST needs a Content-Length header", 411)
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(f"invalid Content-Length {length!r}") from None
        limit = self.server.config.max_body_bytes
        if size > limit:
            self._discard(size)
            raise RequestError(f"request body of {size} bytes is larger than the limit of {limit} bytes", 413)
        return self.rfile.read(size)

    def _discard(self, size: int) -> None:
        """Reads and drops an oversized body so the client sees the 413, not a reset connection."""
        if size > DRAIN_LIMIT_BYTES:
            self.close_connection = True  # too much to read: the unread body ends the connection
            return
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 20))
            if not chunk:
                self.close_connection = True
                return
            size -= len(chunk)

    def _handle(self) -> None:
        try:
            body = self._read_body()
            status, response = self._route(body)
        except RequestError as error:
            status, response = error.status, {"error": str(error)}
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client stalled or left mid-request: nobody to answer
            return
        except VersionUnloaded as error:
            status, response = 503, {"error": str(error)}
        except tf.errors.InvalidArgumentError as error:  # e.g. a b64 string that is no tf.Example
            status, response = 400, {"error": f"the model rejected the input: {error.message.splitlines()[0]}"}
        except Exception as error:  # noqa: BLE001 - a bug must answer 500, not kill the thread
            log.exception("internal error on %s %s", self.command, self.path)
            status, response = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        self._send_json(status, response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    # -- routing -----------------------------------------------------------------------------------

    def _route(self, body: bytes) -> tuple[int, dict | bytes]:
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/readyz"):
            self._require_method("GET", "HEAD")
            return self._health(path)
        match = MODEL_PATH.match(path)
        if not match:
            raise RequestError(f"no such endpoint {path!r}; see /v1/models/{self.server.registry.name}", 404)
        registry = self.server.registry
        if match["name"] != registry.name:
            raise RequestError(f"unknown model {match['name']!r}; this server serves {registry.name!r}", 404)
        if match["label"] is not None:
            raise RequestError(f"version labels are not supported (got label {match['label']!r}); use /versions/<n>", 404)
        version = _parse_version(match["version"])
        action = match["action"]
        if action is None:
            self._require_method("GET", "HEAD")
            return 200, self._status(version)
        if action == "/metadata":
            self._require_method("GET", "HEAD")
            return 200, self._metadata(version)
        if action == ":predict":
            self._require_method("POST")
            with self.server.in_flight:
                return 200, self._predict(version, body)
        if action == ":rank":
            self._require_method("POST")
            with self.server.in_flight:
                return 200, self._rank(version, body)
        raise RequestError(f"unsupported method {action[1:]!r}; this server answers :predict and :rank", 404)

    def _require_method(self, *methods: str) -> None:
        if self.command not in methods:
            raise RequestError(f"{self.command} is not allowed here; use {' or '.join(methods)}", 405)

    def _health(self, path: str) -> tuple[int, dict]:
        if path == "/healthz":
            return 200, {"status": "ok"}
        versions = self.server.registry.versions()
        if versions:
            return 200, {"status": "ready", "model": self.server.registry.name, "versions": versions}
        return 503, {"status": "not ready", "error": f"no version of {self.server.registry.name!r} is loaded yet"}

    def _served(self, version: int | None) -> ServedVersion:
        registry = self.server.registry
        served = registry.get(version)
        if served is not None:
            return served
        if version is None:
            raise RequestError(f"model {registry.name!r} has no loaded version yet", 503)
        status = registry.status(version)
        if status is not None and status.error:
            raise RequestError(f"version {version} of {registry.name!r} failed to load: {status.error}", 404)
        raise RequestError(f"version {version} of model {registry.name!r} is not available; "
                           f"loaded versions: {registry.versions()}", 404)

    # -- endpoints ---------------------------------------------------------------------------------

    def _status(self, version: int | None) -> dict:
        registry = self.server.registry
        statuses = registry.statuses()
        if version is not None:
            statuses = [s for s in statuses if s.version == version]
            if not statuses:
                raise RequestError(f"version {version} of model {registry.name!r} was not found", 404)
        elif not statuses:
            raise RequestError(f"model {registry.name!r} has no versions yet under {registry.model_dir}", 404)
        return {"model_version_status": [s.to_json() for s in statuses]}

    def _metadata(self, version: int | None) -> dict:
        served = self._served(version)
        return {
            "model_spec": {"name": self.server.registry.name, "signature_name": "", "version": str(served.version)},
            "metadata": {"signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signature_def": served.signature_def_json,
            }},
        }

    def _predict(self, version: int | None, body: bytes) -> dict:
        request = parse_json_object(body)
        served = self._served(version)
        name = request.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(name, str):
            raise RequestError(f"'signature_name' must be a string, got {json.dumps(name)[:40]}")
        signature = served.signatures.get(name)
        if signature is None:
            raise RequestError(f"unknown signature_name {name!r}; this model has {sorted(served.signatures)}", 400)
        inputs, fmt = parse_predict(request, signature.inputs)
        outputs = signature(inputs)
        return predict_response(outputs, fmt)

    def _rank(self, version: int | None, body: bytes) -> bytes:
        request = parse_json_object(body)
        served = self._served(version)
        inputs, top_k = parse_rank(request, served.columns, self.server.config.max_candidates)
        outputs = served.signatures[RANK_SIGNATURE](inputs)
        model_spec = {"name": self.server.registry.name, "version": str(served.version),
                      "signature_name": RANK_SIGNATURE}
        return rank_response_json(outputs, served.spec, top_k, model_spec)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise RequestError(f"version must be a non-negative integer, got {text!r}")
    return int(text)


def build_server(model_base: str, model_name: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 config: ServerConfig | None = None) -> ModelServer:
    """Loads the model's versions and binds (but does not start) a :class:`ModelServer`.

    Args:
        model_base: export base holding ``<name>/<version>/`` (or a model directory itself).
        model_name: the model's name; defaults to the only model under ``model_base``.
        host: address to bind. Defaults to loopback.
        port: port to bind; 0 picks a free one.
        config: limits and batching; defaults to :class:`ServerConfig()`.
    """
    config = config or ServerConfig()
    model_dir, name = resolve_model_dir(model_base, model_name)
    in_flight = InFlight()
    registry = ModelRegistry(model_dir, name, batch_max_size=config.batch_max_size,
                             batch_timeout_ms=config.batch_timeout_ms, poll_seconds=config.poll_seconds,
                             in_flight=in_flight)
    registry.start()
    try:
        return ModelServer((host, port), registry, config, in_flight)
    except BaseException:
        registry.close()
        raise


@contextlib.contextmanager
def make_server(model_base: str, model_name: str | None = None, host: str = DEFAULT_HOST, port: int = 0,
                **settings) -> Iterator[ModelServer]:
    """Runs a server in a background thread for the ``with`` block (tests, benchmarks).

    Args:
        model_base, model_name, host: as for :func:`serve`.
        port: defaults to 0, a free port; read it back from ``server.url``.
        **settings: :class:`ServerConfig` fields (``batch_max_size``, ``batch_timeout_ms``, ...).

    Yields:
        The running :class:`ModelServer`; ``server.url`` is its base URL, ``server.registry`` its
        versions.
    """
    server = build_server(model_base, model_name, host, port, ServerConfig(**settings))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="mmoe-serving", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        server.registry.close()
        thread.join(timeout=10)


def serve(model_base: str, model_name: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          batch_max_size: int = DEFAULT_BATCH_MAX_SIZE, batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
          poll_seconds: float = DEFAULT_POLL_SECONDS, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          max_candidates: int = DEFAULT_MAX_CANDIDATES) -> None:
    """Serves every version under ``<model_base>/<model_name>/`` until interrupted (blocking).

    Args:
        model_base: export base holding ``<name>/<version>/``, e.g. ``runs/clicklog/export``; a
            model directory holding integer versions works too.
        model_name: the model's name in URLs; defaults to the only model under ``model_base``.
        host: address to bind. Defaults to ``127.0.0.1`` (loopback only).
        port: port to bind. Defaults to 8501, TF Serving's REST port.
        batch_max_size: most rows per batched model call; 1 or less disables batching.
        batch_timeout_ms: longest wait for concurrent requests to join a batch.
        poll_seconds: how often new versions are looked for; 0 disables hot reload.
        max_body_bytes: larger request bodies get 413.
        max_candidates: rank requests with more candidates get 413.
    """
    config = ServerConfig(batch_max_size, batch_timeout_ms, poll_seconds, max_body_bytes, max_candidates)
    server = build_server(model_base, model_name, host, port, config)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log.info("serving model %r (versions %s) at %s", server.registry.name, server.registry.versions(), server.url)
    print(f"serving model {server.registry.name!r} versions {server.registry.versions()} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.registry.close()
