"""The server's Prometheus metrics, served at TF Serving's path ``/monitoring/prometheus/metrics``.

Each server has its own ``prometheus_client.CollectorRegistry`` (not the process-wide one), so
several servers in one process keep separate counts. What is measured as it happens:

* ``mmoe_serving_requests_total{endpoint, model, version, code}``: answered requests. ``endpoint``
  is the route's name (``rank``, ``predict``, ``metadata``, ``readyz``, ... or ``unrouted`` for a
  path no route serves), never the raw path; ``version`` is the version that answered (``""``
  when none did), so a client cannot create label values by asking for versions that do not
  exist; ``code`` is the HTTP status.
* ``mmoe_serving_request_latency_seconds{endpoint}``: a histogram, from the request read to the
  answer written.
* ``mmoe_serving_rejected_requests_total{endpoint, reason}``: requests refused with 503 without
  running: ``concurrency`` and ``queue`` (overload), ``shutting_down``, ``version_unloaded``.
* ``mmoe_serving_batch_size{model}``: a histogram of the rows of every batched model call.

And what is read from the model's registry when the page is scraped (nothing on the hot path):

* ``mmoe_serving_model_version_loaded{model, version}``: 1 for each version serving.
* ``mmoe_serving_model_version_load_failed{model, version}``: 1 for each version whose last load
  failed (its error is in ``GET /v1/models/{name}``).
* ``mmoe_serving_batch_queued_rows{model, version, signature}``: rows waiting in each batcher.
* ``mmoe_serving_requests_in_progress``: model requests being handled now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

if TYPE_CHECKING:
    from serving.batching import InFlight
    from serving.models import ModelRegistry

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's
METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version scrapes
UNROUTED = "unrouted"  # the endpoint label of a request no route serves (404, 405, bad request line)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = tuple(float(2 ** k) for k in range(15))  # 1 to 16,384 rows


class ServerMetrics:
    """The metrics of one server and the Prometheus page that shows them.

    Args:
        model: str. The served model's name (the ``model`` label of the batch size histogram).
    """

    def __init__(self, model: str):
        self.registry = CollectorRegistry()
        self.requests = Counter("mmoe_serving_requests", "Requests answered, by endpoint, model, version and "
                                "HTTP status.", ("endpoint", "model", "version", "code"), registry=self.registry)
        self.latency = Histogram("mmoe_serving_request_latency_seconds", "Time from the request read to the answer "
                                 "written, by endpoint.", ("endpoint",), buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.rejected = Counter("mmoe_serving_rejected_requests", "Requests refused with 503 without running, by "
                                "endpoint and reason (concurrency, queue, shutting_down, version_unloaded).",
                                ("endpoint", "reason"), registry=self.registry)
        self.batch_size = Histogram("mmoe_serving_batch_size", "Rows per batched model call.", ("model",),
                                    buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self._batch_size = self.batch_size.labels(model)

    def observe_request(self, endpoint: str, model: str, version: str, code: int | str, seconds: float) -> None:
        """Counts one answered request and its latency.

        Args:
            endpoint: the route's name, or :data:`UNROUTED`.
            model: the model named in the request; ``""`` for the server's own routes.
            version: the version that answered as a string; ``""`` when none did.
            code: the HTTP status (or a gRPC status name).
            seconds: from the request read to the answer written.
        """
        self.requests.labels(endpoint, model, version, code).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_rejection(self, endpoint: str, reason: str) -> None:
        """Counts one request refused without running (``reason``: the refusal's ``reason``)."""
        self.rejected.labels(endpoint, reason).inc()

    def observe_batch(self, rows: int) -> None:
        """Records the rows of one batched model call (:class:`serving.batching.InFlight`'s ``on_batch``)."""
        self._batch_size.observe(rows)

    def watch(self, models: ModelRegistry, in_flight: InFlight) -> None:
        """Adds the gauges read from ``models`` (versions, batch queues) and ``in_flight`` at each scrape."""
        self.registry.register(_ModelCollector(models, in_flight))

    def page(self) -> bytes:
        """Every metric in Prometheus' text format (:data:`METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _ModelCollector:
    """The gauges computed at scrape time from the model's registry and the requests in progress."""

    def __init__(self, models: ModelRegistry, in_flight: InFlight):
        self.models = models
        self.in_flight = in_flight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        name = self.models.name
        loaded = GaugeMetricFamily("mmoe_serving_model_version_loaded", "1 for each version serving.",
                                   labels=("model", "version"))
        failed = GaugeMetricFamily("mmoe_serving_model_version_load_failed", "1 for each version whose last load "
                                   "failed; the model status says why.", labels=("model", "version"))
        for status in self.models.statuses():
            if status.state == "AVAILABLE":
                loaded.add_metric((name, str(status.version)), 1)
            elif status.error:
                failed.add_metric((name, str(status.version)), 1)
        queued = GaugeMetricFamily("mmoe_serving_batch_queued_rows", "Rows waiting in each batching queue.",
                                   labels=("model", "version", "signature"))
        for version in self.models.versions():
            served = self.models.get(version)
            for signature in (served.signatures.values() if served is not None else ()):
                if signature.batcher is not None:
                    queued.add_metric((name, str(version), signature.name), signature.batcher.queued_rows)
        yield loaded
        yield failed
        yield queued
        yield GaugeMetricFamily("mmoe_serving_requests_in_progress", "Model requests being handled now.",
                                value=self.in_flight())
