"""The server's entry point, :func:`serve`: in this process, or as worker processes this one
supervises without ever importing TensorFlow.

With ``workers=1`` the server runs here (:func:`serving.server.serve_in_foreground`). With more,
this process only holds the ports and supervises (:mod:`serving.workers`): the workers import
TensorFlow and load the model, the parent stays a small Python process (70 MB resident measured,
instead of a TensorFlow runtime's 0.6 GB), and a wrong model directory fails in the workers, which
report it as the one-line error the parent raises.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Mapping

from serving.batching import DEFAULT_DRAIN_SECONDS, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_ENQUEUED_BATCHES
from serving.config import (
    DEFAULT_BATCH_MAX_SIZE,
    DEFAULT_BATCH_TIMEOUT_MS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_POLL_SECONDS,
    ServerConfig,
)
from serving.ports import DEFAULT_GRPC_PORT, DEFAULT_HOST, DEFAULT_PORT
from serving.versions import DEFAULT_VERSION_POLICY, VersionPolicy
from serving.workers import Report, run_workers

log = logging.getLogger(__name__)


def serve(model_base: str, model_name: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          batch_max_size: int = DEFAULT_BATCH_MAX_SIZE, batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
          poll_seconds: float = DEFAULT_POLL_SECONDS, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          max_candidates: int = DEFAULT_MAX_CANDIDATES,
          max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
          max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES,
          drain_seconds: float = DEFAULT_DRAIN_SECONDS,
          versions: VersionPolicy | str = DEFAULT_VERSION_POLICY,
          version_labels: Mapping[str, int] | str | None = None,
          grpc_port: int | None = DEFAULT_GRPC_PORT, workers: int = 1,
          worker_initializer: Callable[[], None] | None = None) -> None:
    """Serves every version under ``<model_base>/<model_name>/`` until SIGTERM or Ctrl-C (blocking),
    then drains and returns.

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
        max_concurrent_requests: model requests in progress at once; more get 503.
        max_enqueued_batches: each batching queue's bound, in batches of ``batch_max_size`` rows;
            a request that finds it full gets 503.
        drain_seconds: on SIGTERM, how long the requests in progress may take to finish.
        versions: which versions to serve (:mod:`serving.versions`): ``latest:N`` (default
            ``latest:1``, TF Serving's), ``all`` or ``specific:V,...``, as text or parsed.
        version_labels: label -> version, e.g. ``{"stable": 3, "canary": 4}`` (or that as text,
            ``"stable=3,canary=4"``); each must point to a version the policy serves.
        grpc_port: TF Serving's gRPC API on this port (default 8500, TF Serving's); None for none.
        workers: int. Server processes sharing ``port`` and ``grpc_port`` (:mod:`serving.workers`),
            each with its own model copy, batchers, limits and metrics (the limits are per
            worker); this process supervises them and returns once all drained. 1 (the default)
            serves in this process, with no other.
        worker_initializer: picklable; with ``workers`` > 1, run first in each worker process,
            before it imports the server (the command line passes its logging set-up and quiet
            TensorFlow start, which spawned processes do not inherit).

    Raises:
        serving.workers.WorkerFailed: with ``workers`` > 1, a worker failed to start or kept dying.
    """
    config = ServerConfig(batch_max_size=batch_max_size, batch_timeout_ms=batch_timeout_ms, poll_seconds=poll_seconds,
                          max_body_bytes=max_body_bytes, max_candidates=max_candidates,
                          max_concurrent_requests=max_concurrent_requests, max_enqueued_batches=max_enqueued_batches,
                          drain_seconds=drain_seconds, versions=versions, version_labels=version_labels,
                          grpc_port=grpc_port)
    if workers <= 1:
        from serving.server import serve_in_foreground  # TensorFlow: this process serves

        serve_in_foreground(model_base, model_name, host, port, config)
        return
    run_workers(functools.partial(_serve_worker, model_base, model_name, host, config), workers, host, port, grpc_port,
                on_ready=functools.partial(_print_workers_banner, host), initializer=worker_initializer)


def _serve_worker(model_base: str, model_name: str | None, host: str, config: ServerConfig, *, port: int,
                  grpc_port: int | None, report) -> None:
    """The workers' target (:func:`serving.server.serve_worker`), named here so that pickling it
    for the workers imports nothing heavy in the parent."""
    from serving.server import serve_worker

    serve_worker(model_base, model_name, host, config, port=port, grpc_port=grpc_port, report=report)


def grpc_at(host: str, grpc_port: int | None) -> str:
    return f" and gRPC at {host}:{grpc_port}" if grpc_port is not None else ""


def _print_workers_banner(host: str, reports: list[Report], port: int, grpc_port: int | None) -> None:
    pids = ", ".join(str(report["pid"]) for report in reports)
    unready = sum(not report["ready"] for report in reports)
    waiting = f"; {unready} not ready yet (no version loaded)" if unready else ""
    line = (f"serving model {reports[0]['model']!r} versions {reports[0]['versions']} at http://{host}:{port}"
            f"{grpc_at(host, grpc_port)} with {len(reports)} workers (pids {pids}){waiting}")
    log.info("%s", line)
    print(line, flush=True)
