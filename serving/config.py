"""One server's settings and their defaults, without TensorFlow (the command line's flags and
:mod:`serving.launch` read them before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from serving.batching import DEFAULT_DRAIN_SECONDS, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_ENQUEUED_BATCHES
from serving.versions import DEFAULT_VERSION_POLICY, VersionPolicy

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
        max_concurrent_requests: model requests in progress at once; more are answered 503.
        max_enqueued_batches: each batching queue holds at most this many batches of
            ``batch_max_size`` rows; a request that finds it full is answered 503.
        drain_seconds: on shutdown, how long the requests in progress may take to finish.
        versions: the version policy (:mod:`serving.versions`) or its text; defaults to
            ``latest:1``, TF Serving's.
        version_labels: label -> version (or its text, ``"stable=3,canary=4"``); none by default.
        grpc_port: also serve TF Serving's gRPC API (:mod:`serving.grpc_service`) on this port
            (0: a free one), over the same versions, batchers and limits; None (the default for
            :func:`make_server`) for REST alone.
    """

    batch_max_size: int = DEFAULT_BATCH_MAX_SIZE
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS
    poll_seconds: float = DEFAULT_POLL_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    versions: VersionPolicy | str = DEFAULT_VERSION_POLICY
    version_labels: Mapping[str, int] | str | None = None
    grpc_port: int | None = None
