"""The REST server's lifecycle: configure, load the model's versions, bind, run, shut down.

It speaks TF Serving's REST API for the exported models, plus a rank endpoint; the endpoints are
listed in :mod:`serving.routes` (the route table), HTTP is handled by :mod:`serving.handler`.
Built on the standard library's ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, one thread per
connection). Concurrent model calls are batched (:mod:`serving.batching`), versions are loaded
and hot-reloaded by :mod:`serving.models`, and everything is counted in the server's Prometheus
metrics (:mod:`serving.metrics`).

Load is bounded: past ``max_concurrent_requests`` model requests in progress, or a batching queue
of ``max_enqueued_batches`` full batches, a request is answered 503 with ``Retry-After`` at once
instead of waiting. Shutting down drains (:meth:`ModelServer.stop`): ``/readyz`` turns 503 and
new model requests are refused with 503 first, while the server still listens (a client that
connects meanwhile is told so instead of being refused); the model requests in progress finish
(up to ``drain_seconds``); every answer from then on closes its keep-alive connection and idle
ones are closed; then the server stops listening, lets the open connections write their last
answers and stops the model's versions. :func:`serve_in_foreground` drains on SIGTERM (and Ctrl-C)
and returns, so the process exits 0; :func:`make_server` drains when its block ends.

Use :func:`serving.launch.serve` to run it in the foreground, :func:`make_server` (a context
manager) to run it in a background thread. ``serve(..., workers=N)`` runs N such servers in worker processes that
share the ports (:mod:`serving.workers`, ``SO_REUSEPORT``), each with its own model copy, batchers
and metrics, supervised by the calling process; each worker's answers say its pid in the
``Server`` header (``mmoe-serving worker/<pid> ...``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import logging
import os
import select
import signal
import threading
import time
from typing import Callable, Iterator

from serving.batching import InFlight
from serving.config import ServerConfig
from serving.grpc_service import start_grpc_server
from serving.handler import RequestHandler
from serving.metrics import ServerMetrics
from serving.models import ModelRegistry, resolve_model_dir
from serving.ports import DEFAULT_HOST, DEFAULT_PORT
from serving.routes import Call, readyz
from serving.launch import grpc_at
from serving.workers import Report

log = logging.getLogger(__name__)



class ModelServer(http.server.ThreadingHTTPServer):
    """An HTTP server bound to one model's :class:`ModelRegistry`.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free one.
        registry: the model's versions (already started).
        config: limits and batching settings.
        in_flight: the requests in progress, shared with the registry's batchers.
        metrics: the server's metrics, watching ``registry`` and ``in_flight``.
        reuse_port: bind with ``SO_REUSEPORT``, as one of several worker processes sharing the
            port (:mod:`serving.workers`); its answers then name its pid in the ``Server`` header.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: many clients may connect at once

    def __init__(self, address: tuple[str, int], registry: ModelRegistry, config: ServerConfig, in_flight: InFlight,
                 metrics: ServerMetrics, reuse_port: bool = False):
        self.allow_reuse_port = reuse_port  # read by server_bind, which the constructor calls
        super().__init__(address, _WorkerRequestHandler if reuse_port else RequestHandler)
        self.registry = registry
        self.config = config
        self.in_flight = in_flight
        self.metrics = metrics
        self.grpc = None  # the gRPC server beside it, and its port, when config.grpc_port is set
        self.grpc_port: int | None = None
        self.connections = _Connections()
        # readable once draining starts: what idle keep-alive handlers wait on besides their socket
        self.drain_signal, self._drain_write = os.pipe()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def draining(self) -> bool:
        """Whether shutting down has begun: no new model requests, every answer closes its connection."""
        return self.in_flight.draining

    def process_request(self, request, client_address) -> None:
        self.connections.opened()  # counted before its thread starts, so a drain cannot miss it
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.closed()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.closed()

    def begin_drain(self) -> None:
        """Readiness turns 503, new model requests are refused, idle connections close. Returns at once."""
        if not self.draining:
            self.in_flight.drain()
            os.write(self._drain_write, b"x")

    def stop(self, seconds: float) -> bool:
        """Drains, then closes: :meth:`begin_drain`; waits for the model requests in progress; ends
        ``serve_forever`` (so call it from another thread, or after ``serve_forever`` returned);
        answers the connections already accepted by the kernel; stops listening; waits for the
        open connections to write their answers; stops the model's versions.

        Args:
            seconds: float. The longest the whole drain waits, in seconds.

        Returns:
            Whether every request and connection finished in time (if not, the rest is cut off).
        """
        deadline = time.monotonic() + seconds
        self.begin_drain()
        self.in_flight.wait_idle(seconds)
        if self.grpc is not None:  # draining already answers new RPCs UNAVAILABLE
            self.grpc.stop(max(0.0, deadline - time.monotonic())).wait()
        self.shutdown()
        poller = select.poll()
        poller.register(self.socket, select.POLLIN)
        while poller.poll(0):
            self._handle_request_noblock()  # connected already: answered, not reset
        self.server_close()
        drained = self.connections.wait_closed(max(0.0, deadline - time.monotonic()))
        if drained:
            os.close(self.drain_signal)
            os.close(self._drain_write)
        else:
            log.warning("stopped with %d connection(s) still open after the %.1f s drain", self.connections(),
                        seconds)
        self.registry.close()
        self.metrics.close()
        return drained


class _WorkerRequestHandler(RequestHandler):
    """:class:`RequestHandler` of a worker process: its ``Server`` header ends ``worker/<pid>``,
    so a client (or a test) can tell which worker answered."""

    def version_string(self) -> str:
        return f"{super().version_string()} worker/{os.getpid()}"


class _Connections:
    """A count of open connections that one can wait on to reach zero."""

    def __init__(self):
        self._cond = threading.Condition()
        self._open = 0

    def __call__(self) -> int:
        return self._open

    def opened(self) -> None:
        with self._cond:
            self._open += 1

    def closed(self) -> None:
        with self._cond:
            self._open -= 1
            if not self._open:
                self._cond.notify_all()

    def wait_closed(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._open == 0, timeout)


def build_server(model_base: str, model_name: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 config: ServerConfig | None = None, reuse_port: bool = False) -> ModelServer:
    """Loads the model's versions and binds (but does not start) a :class:`ModelServer`.

    Args:
        model_base: export base holding ``<name>/<version>/`` (or a model directory itself).
        model_name: the model's name; defaults to the only model under ``model_base``.
        host: address to bind. Defaults to loopback.
        port: port to bind; 0 picks a free one.
        config: limits and batching; defaults to :class:`ServerConfig()`.
        reuse_port: bind REST and gRPC with ``SO_REUSEPORT`` (a worker of :mod:`serving.workers`).
    """
    config = config or ServerConfig()
    model_dir, name = resolve_model_dir(model_base, model_name)
    metrics = ServerMetrics(name)
    in_flight = InFlight(config.max_concurrent_requests, config.max_enqueued_batches, metrics.observe_batch)
    registry = ModelRegistry(model_dir, name, batch_max_size=config.batch_max_size,
                             batch_timeout_ms=config.batch_timeout_ms, poll_seconds=config.poll_seconds,
                             in_flight=in_flight, versions=config.versions, version_labels=config.version_labels)
    registry.start()
    metrics.watch(registry, in_flight)  # after the start: a worker's first shared sample has its versions
    try:
        server = ModelServer((host, port), registry, config, in_flight, metrics, reuse_port)
    except BaseException:
        registry.close()
        metrics.close()
        raise
    if config.grpc_port is not None:
        try:
            server.grpc, server.grpc_port = start_grpc_server(
                registry, host, config.grpc_port, max_message_bytes=config.max_body_bytes, in_flight=in_flight,
                metrics=metrics, reuse_port=reuse_port)
        except BaseException:
            server.server_close()
            registry.close()
            raise
    return server


@contextlib.contextmanager
def make_server(model_base: str, model_name: str | None = None, host: str = DEFAULT_HOST, port: int = 0,
                **settings) -> Iterator[ModelServer]:
    """Runs a server in a background thread for the ``with`` block (tests, benchmarks).

    Args:
        model_base, model_name, host: as for :func:`serving.launch.serve`.
        port: defaults to 0, a free port; read it back from ``server.url``.
        **settings: :class:`ServerConfig` fields (``batch_max_size``, ``batch_timeout_ms``, ...).

    Yields:
        The running :class:`ModelServer`; ``server.url`` is its base URL, ``server.registry`` its
        versions. When the block ends, the server drains as on SIGTERM.
    """
    server = build_server(model_base, model_name, host, port, ServerConfig(**settings))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="mmoe-serving", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop(server.config.drain_seconds)
        thread.join(timeout=10)


def serve_worker(model_base: str, model_name: str | None, host: str, config: ServerConfig, *, port: int,
                 grpc_port: int | None, report) -> None:
    """One worker process of :func:`serving.launch.serve`: serves in the foreground with ``SO_REUSEPORT`` until
    SIGTERM, then drains and returns. The ``target`` of :func:`serving.workers.run_workers`.

    Args:
        model_base, model_name, host: as for :func:`serving.launch.serve`.
        config: the server's settings (its ``grpc_port`` is replaced by ``grpc_port``).
        port: int. The REST port every worker shares (the parent already chose it).
        grpc_port: int | None. The gRPC port every worker shares, or None.
        report: called once with this worker's :data:`~serving.workers.Report` when it listens.
    """
    config = dataclasses.replace(config, grpc_port=grpc_port)
    serve_in_foreground(model_base, model_name, host, port, config, reuse_port=True,
                        on_started=lambda server: report(_worker_report(server)))


def serve_in_foreground(model_base: str, model_name: str | None, host: str, port: int, config: ServerConfig,
                        on_started: Callable[[ModelServer], None] | None = None, reuse_port: bool = False) -> None:
    """Builds a server, calls ``on_started(server)`` once it listens (default: prints where it
    serves), serves until SIGTERM or Ctrl-C, then drains (for up to ``config.drain_seconds``) and
    returns. :func:`serving.launch.serve` with one worker."""
    on_started = on_started or _print_banner
    server = build_server(model_base, model_name, host, port, config, reuse_port)
    drain_seconds = config.drain_seconds
    # the drain runs in its own thread: it ends serve_forever, which runs in this one
    drain = threading.Thread(target=server.stop, args=(drain_seconds,), name="mmoe-drain")

    def on_sigterm(*_) -> None:
        if drain.ident is None and not server.draining:  # once: a second SIGTERM changes nothing
            log.info("SIGTERM: draining for up to %.1f s", drain_seconds)
            drain.start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a worker blocked it until now
    try:
        on_started(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if drain.ident is None:  # Ctrl-C, or serve_forever failed: drain here
            server.stop(drain_seconds)
        else:
            drain.join()


def _print_banner(server: ModelServer) -> None:
    grpc_address = grpc_at(server.server_address[0], server.grpc_port if server.grpc is not None else None)
    log.info("serving model %r (versions %s) at %s%s", server.registry.name, server.registry.versions(), server.url,
             grpc_address)
    print(f"serving model {server.registry.name!r} versions {server.registry.versions()} at {server.url}{grpc_address}",
          flush=True)


def _worker_report(server: ModelServer) -> Report:
    """What a worker tells the parent once it listens: its pid, model, versions and readiness."""
    status, _ = readyz(Call(server, None, b""))
    return {"pid": os.getpid(), "model": server.registry.name, "versions": server.registry.versions(),
            "ready": status == 200}
