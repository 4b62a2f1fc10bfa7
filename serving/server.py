"""The REST server's lifecycle: configure, load the model's versions, bind, run, shut down.

It speaks TF Serving's REST API for the exported models, plus a rank endpoint; the endpoints are
listed in :mod:`serving.routes` (the route table), HTTP is handled by :mod:`serving.handler`.
Built on the standard library's ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, one thread per
connection). Concurrent model calls are batched (:mod:`serving.batching`), versions are loaded
and hot-reloaded by :mod:`serving.models`.

Use :func:`serve` to run it in the foreground, :func:`make_server` (a context manager) to run it
in a background thread.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

from serving.batching import InFlight
from serving.handler import RequestHandler
from serving.models import ModelRegistry, resolve_model_dir

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
DEFAULT_BATCH_MAX_SIZE = 4096  # rows (about 40 rank requests of 100 candidates)
DEFAULT_BATCH_TIMEOUT_MS = 2.0
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_CANDIDATES = 10_000


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
    """An HTTP server bound to one model's :class:`ModelRegistry`.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free one.
        registry: the model's versions (already started).
        config: limits and batching settings.
        in_flight: the count of requests in progress, shared with the registry's batchers.
    """

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
