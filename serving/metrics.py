"""The server's Prometheus metrics, served at TF Serving's path ``/monitoring/prometheus/metrics``.

Each server has its own ``prometheus_client.CollectorRegistry`` (not the process-wide one), so
several servers in one process keep separate counts. What is measured as it happens:

* ``mmoe_serving_requests_total{endpoint, model, version, code}``: answered requests. ``endpoint``
  is the route's name (``rank``, ``predict``, ``metadata``, ``readyz``, ... or ``unrouted`` for a
  path no route serves), never the raw path; ``version`` is the version that answered (``""``
  when none did), so a client cannot create label values by asking for versions that do not
  exist; ``code`` is the HTTP status.
* ``mmoe_serving_request_latency_seconds{endpoint}``: a histogram, from the request read to the
  answer ready to write (a request is counted before its answer leaves, so a client that read
  it finds it in its next scrape).
* ``mmoe_serving_rejected_requests_total{endpoint, reason}``: requests refused with 503 without
  running: ``concurrency`` and ``queue`` (overload), ``shutting_down``, ``version_unloaded``.
* ``mmoe_serving_batch_size{model}``: a histogram of the rows of every batched model call.

And what is read from the model's registry when the page is scraped (nothing on the hot path):

* ``mmoe_serving_model_version_loaded{model, version}``: 1 for each version serving.
* ``mmoe_serving_model_version_load_failed{model, version}``: 1 for each version whose last load
  failed (its error is in ``GET /v1/models/{name}``).
* ``mmoe_serving_batch_queued_rows{model, version, signature}``: rows waiting in each batcher.
* ``mmoe_serving_requests_in_progress``: model requests being handled now.

Several worker processes (``--workers N``, :mod:`serving.workers`) count as one server: the
supervisor gives them one directory in ``PROMETHEUS_MULTIPROC_DIR``, prometheus-client's
multiprocess mode, where every worker's counters and histograms live in memory-mapped files, and
whichever worker a scrape reaches answers with the sums over all of them (a restarted worker's
counts included: counters never go down). The registry gauges cannot be read from another
process at scrape time, so there each worker writes them into that directory every
:data:`GAUGE_SAMPLE_SECONDS` (and the scraped one just before it answers), as ``livesum`` gauges
over the live workers: ``mmoe_serving_model_version_loaded`` is then the number of workers
serving the version (N when all do), ``..._load_failed`` the number whose load failed, and the
queued rows and requests in progress are totals. A version no worker holds any more keeps its
sample, at 0.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

if TYPE_CHECKING:
    from serving.batching import InFlight
    from serving.models import ModelRegistry

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's
METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version scrapes
UNROUTED = "unrouted"  # the endpoint label of a request no route serves (404, 405, bad request line)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = tuple(float(2 ** k) for k in range(15))  # 1 to 16,384 rows
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's switch to multiprocess mode
GAUGE_SAMPLE_SECONDS = 1.0  # how often a worker writes its registry gauges for the others' scrapes


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when this process is in it."""
    return os.environ.get(MULTIPROCESS_DIR_ENV) or os.environ.get(MULTIPROCESS_DIR_ENV.lower())


class ServerMetrics:
    """The metrics of one server and the Prometheus page that shows them.

    Args:
        model: str. The served model's name (the ``model`` label of the batch size histogram).

    In prometheus-client's multiprocess mode (:func:`multiprocess_dir` is set, as in every worker of
    :mod:`serving.workers`), the page shows the sums over every process writing to that directory.
    """

    def __init__(self, model: str):
        self.shared_dir = multiprocess_dir()
        self._gauges: _SharedGauges | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter("mmoe_serving_requests", "Requests answered, by endpoint, model, version and "
                                "HTTP status.", ("endpoint", "model", "version", "code"), registry=self.registry)
        self.latency = Histogram("mmoe_serving_request_latency_seconds", "Time from the request read to the answer "
                                 "ready to write, by endpoint.", ("endpoint",), buckets=LATENCY_BUCKETS,
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
            seconds: from the request read to the answer ready to write.
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
        """Adds the gauges read from ``models`` (versions, batch queues) and ``in_flight``: at each
        scrape, or, shared with other workers, every :data:`GAUGE_SAMPLE_SECONDS` until :meth:`close`."""
        collector = _ModelCollector(models, in_flight)
        if self.shared_dir is None:
            self.registry.register(collector)
        else:
            self._gauges = _SharedGauges(collector)

    def page(self) -> bytes:
        """Every metric in Prometheus' text format (:data:`METRICS_CONTENT_TYPE`); shared with
        other workers, their sums over all of them."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        if self._gauges is not None:
            self._gauges.sample()  # this worker's share is current; the others' at most a sample old
        shared = CollectorRegistry()
        MultiProcessCollector(shared, path=self.shared_dir)
        return generate_latest(shared)

    def close(self) -> None:
        """Stops writing the shared gauges (nothing to do for a server alone)."""
        if self._gauges is not None:
            self._gauges.stop()


# the gauges read from the model's registry: name -> (help, label names)
REGISTRY_GAUGES = {
    "mmoe_serving_model_version_loaded": ("1 for each version serving (with workers: the workers serving it).",
                                          ("model", "version")),
    "mmoe_serving_model_version_load_failed": ("1 for each version whose last load failed (with workers: the "
                                               "workers where it did); the model status says why.",
                                               ("model", "version")),
    "mmoe_serving_batch_queued_rows": ("Rows waiting in each batching queue.", ("model", "version", "signature")),
    "mmoe_serving_requests_in_progress": ("Model requests being handled now.", ()),
}


class _ModelCollector:
    """The gauges of :data:`REGISTRY_GAUGES`, computed at scrape time from the model's registry and
    the requests in progress."""

    def __init__(self, models: ModelRegistry, in_flight: InFlight):
        self.models = models
        self.in_flight = in_flight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        name = self.models.name
        loaded, failed, queued, in_progress = (GaugeMetricFamily(metric, text, labels=labels)
                                               for metric, (text, labels) in REGISTRY_GAUGES.items())
        for status in self.models.statuses():
            if status.state == "AVAILABLE":
                loaded.add_metric((name, str(status.version)), 1)
            elif status.error:
                failed.add_metric((name, str(status.version)), 1)
        for version in self.models.versions():
            served = self.models.get(version)
            for signature in (served.signatures.values() if served is not None else ()):
                if signature.batcher is not None:
                    queued.add_metric((name, str(version), signature.name), signature.batcher.queued_rows)
        in_progress.add_metric((), self.in_flight())
        yield from (loaded, failed, queued, in_progress)


class _SharedGauges:
    """The gauges of :class:`_ModelCollector` written into the multiprocess directory by a thread,
    every :data:`GAUGE_SAMPLE_SECONDS`, as ``livesum`` gauges (summed over the live workers).

    A label set the collector no longer yields (an unloaded version) is set to 0, not forgotten:
    multiprocess files keep every sample they were given.
    """

    def __init__(self, collector: _ModelCollector):
        self.collector = collector
        self.gauges = {metric: Gauge(metric, text, labels, multiprocess_mode="livesum", registry=None)
                       for metric, (text, labels) in REGISTRY_GAUGES.items()}
        self.written: dict[str, set[tuple[str, ...]]] = {metric: set() for metric in REGISTRY_GAUGES}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="mmoe-metrics-gauges", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(GAUGE_SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        """Writes the collector's current values (and 0 for label sets it no longer has)."""
        with self._lock:
            for family in self.collector.collect():
                gauge, label_names = self.gauges[family.name], REGISTRY_GAUGES[family.name][1]
                seen = set()
                for sample in family.samples:
                    key = tuple(sample.labels[label] for label in label_names)
                    (gauge.labels(*key) if key else gauge).set(sample.value)
                    seen.add(key)
                for key in self.written[family.name] - seen:
                    gauge.labels(*key).set(0)
                self.written[family.name] |= seen

    def stop(self) -> None:
        self._stop.set()
