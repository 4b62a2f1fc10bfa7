"""The server in production: Prometheus metrics, overload answered 503, and a drain on SIGTERM.

Over real sockets on loopback, with the session run's export; a slowed model (``run_function``
wrapped with a sleep) makes overload and in-flight requests last long enough to observe.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import serving.models
from feature_specs.tensors import serving_columns
from serving.batching import Batcher, InFlight, Overloaded, ShuttingDown
from serving.metrics import METRICS_PATH
from serving.server import make_server

from rank_load import RANK, rank_until_refused

SLOW_SECONDS = 0.3  # each model call of the slowed model


@pytest.fixture(scope="module")
def model_base(trained_run, tmp_path_factory) -> str:
    """Version 1 is the run's export; version 2 is broken (no SavedModel), so it fails to load."""
    base = tmp_path_factory.mktemp("production") / "clicklog"
    shutil.copytree(trained_run.export_path, base / "1")
    (base / "2").mkdir()
    (base / "2" / "README").write_text("not a SavedModel")
    return str(base.parent)


@pytest.fixture(scope="module")
def server(model_base):
    """Small limits: 2 model requests at once, batches of 40 rows, one batch queued."""
    with make_server(model_base, poll_seconds=0, max_concurrent_requests=2, max_enqueued_batches=1,
                     batch_max_size=40) as running:
        yield running


@pytest.fixture(scope="module")
def rank_body(trained_run) -> bytes:
    """A rank request of 20 candidates, each feature at its lower bound (or default, or 0 / "x")."""
    def value(column):
        if column.dtype == "string":
            return column.default if column.default is not None else "x"
        return column.min if column.min is not None else (column.default or 0)
    candidate = {c.name: value(c) for c in serving_columns(trained_run.spec)}
    return json.dumps({"candidates": [candidate] * 20}).encode()


def request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request on its own connection."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """The metrics page, parsed by prometheus_client: ``(sample name, sorted labels) -> value``."""
    status, headers, page = request(url, "GET", METRICS_PATH)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(page.decode()) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def slow_model(monkeypatch):
    """Every model call sleeps :data:`SLOW_SECONDS` first (the batchers look ``run_function`` up per call)."""
    real = serving.models.run_function
    monkeypatch.setattr(serving.models, "run_function",
                        lambda function, inputs: (time.sleep(SLOW_SECONDS), real(function, inputs))[1])


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_count_requests_by_endpoint_version_and_code(server, rank_body):
    before = scrape(server.url)
    assert request(server.url, "POST", RANK, rank_body)[0] == 200
    assert request(server.url, "POST", RANK, b"{not json")[0] == 400
    assert request(server.url, "GET", "/v1/models/clicklog/versions/7/metadata")[0] == 404
    assert request(server.url, "GET", "/no/such/path")[0] == 404
    after = scrape(server.url)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "mmoe_serving_requests_total"
    assert moved(requests, endpoint="rank", model="clicklog", version="1", code="200") == 1
    assert moved(requests, endpoint="rank", model="clicklog", version="", code="400") == 1  # before a version
    assert moved(requests, endpoint="metadata", model="clicklog", version="", code="404") == 1  # 7: no label
    assert moved(requests, endpoint="unrouted", model="", version="", code="404") == 1  # not the raw path
    assert moved(requests, endpoint="metrics", model="", version="", code="200") == 1  # the first scrape
    assert moved("mmoe_serving_request_latency_seconds_count", endpoint="rank") == 2
    assert moved("mmoe_serving_request_latency_seconds_bucket", endpoint="rank", le="+Inf") == 2
    assert moved("mmoe_serving_batch_size_count", model="clicklog") == 1
    assert moved("mmoe_serving_batch_size_sum", model="clicklog") == 20
    assert value(after, "mmoe_serving_model_version_loaded", model="clicklog", version="1") == 1
    assert value(after, "mmoe_serving_model_version_load_failed", model="clicklog", version="2") == 1
    assert value(after, "mmoe_serving_batch_queued_rows", model="clicklog", version="1", signature="predict_raw") == 0
    assert value(after, "mmoe_serving_requests_in_progress") == 0
    assert not any("/no/such/path" in str(labels) for _, labels in after)


# -- overload --------------------------------------------------------------------------------------


def test_overload_is_503_with_retry_after_counted_and_the_server_stays_up(server, rank_body, slow_model):
    before = scrape(server.url)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = [pool.submit(request, server.url, "POST", RANK, rank_body) for _ in range(12)]
        time.sleep(SLOW_SECONDS / 3)
        health = request(server.url, "GET", "/healthz")[0]
        answers = [answer.result() for answer in answers]
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503}, statuses  # no other 5xx
    assert 200 in statuses and 503 in statuses, statuses  # at most 2 in progress: the others are shed
    for status, headers, body in answers:
        if status == 503:
            assert headers["Retry-After"] == "1" and headers["Content-Type"] == "application/json"
            assert "retry later" in json.loads(body)["error"], body
    assert health == 200
    after = scrape(server.url)
    rejected = sum(value(after, "mmoe_serving_rejected_requests_total", endpoint="rank", reason=reason)
                   - value(before, "mmoe_serving_rejected_requests_total", endpoint="rank", reason=reason)
                   for reason in ("concurrency", "queue"))
    assert rejected == statuses.count(503)
    shed = {"endpoint": "rank", "model": "clicklog", "version": "", "code": "503"}  # refused before any version
    assert (value(after, "mmoe_serving_requests_total", **shed)
            - value(before, "mmoe_serving_requests_total", **shed)) == statuses.count(503)
    assert request(server.url, "POST", RANK, rank_body)[0] == 200  # and it serves again once the load is gone


def test_a_full_batching_queue_refuses_at_once_and_the_rest_still_run():
    release, started = threading.Event(), threading.Event()

    def run(inputs):
        started.set()
        release.wait(10)
        return {"y": inputs["x"] * 2}

    batcher = Batcher(run, max_size=2, timeout_ms=0, in_flight=InFlight(max_enqueued_batches=1))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(batcher.submit, {"x": np.array([1.0])})  # alone: runs inline, blocked in run
        assert started.wait(10)
        queued = pool.submit(batcher.submit, {"x": np.array([2.0, 3.0])})
        while batcher.queued_rows < 2:
            time.sleep(0.01)
        with pytest.raises(Overloaded, match="queue is full") as refused:
            batcher.submit({"x": np.array([4.0])})
        assert refused.value.reason == "queue" and refused.value.retry_after == 1
        release.set()
        assert running.result(10)["y"].tolist() == [2.0] and queued.result(10)["y"].tolist() == [4.0, 6.0]
    batcher.close()


def test_in_flight_refuses_past_its_limit_and_once_draining():
    in_flight = InFlight(limit=1)
    with in_flight:
        with pytest.raises(Overloaded, match="limit of 1") as refused:
            in_flight.__enter__()
        assert refused.value.reason == "concurrency"
    in_flight.drain()
    with pytest.raises(ShuttingDown) as refused:
        in_flight.__enter__()
    assert refused.value.reason == "shutting_down" and in_flight() == 0 and in_flight.wait_idle(0)


# -- graceful shutdown -----------------------------------------------------------------------------


def test_a_second_server_keeps_its_own_metrics_and_its_end_closes_idle_connections(server, model_base):
    with make_server(model_base, poll_seconds=0) as other:
        host, port = other.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() and connection.sock is not None  # kept alive, now idle
        samples = scrape(other.url)
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert connection.sock.recv(1) == b""  # closed by the drain, not left to its idle timeout
    connection.close()
    assert value(samples, "mmoe_serving_requests_total", endpoint="healthz", model="", version="", code="200") == 1
    assert value(samples, "mmoe_serving_requests_total", endpoint="rank", model="clicklog", version="1",
                 code="200") == 0  # the module's server answered ranks: not counted here


@pytest.mark.slow
def test_sigterm_during_a_load_loop_loses_no_accepted_request(model_base, rank_body, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code = ("import time, serving.models as m; real = m.run_function; "
            f"m.run_function = lambda f, x: (time.sleep({SLOW_SECONDS}), real(f, x))[1]; "
            f"from serving.launch import serve; serve({model_base!r}, 'clicklog', port={port}, poll_seconds=0, "
            "versions='latest:1', version_labels='stable=1', grpc_port=None)")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as errors:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=errors, text=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    outcomes: list[str] = []  # each request's status, or the error that lost it
    stop = threading.Event()

    try:
        banner = process.stdout.readline()
        assert url in banner, banner
        clients = [threading.Thread(target=rank_until_refused, args=(port, rank_body, outcomes, stop, False))
                   for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(2 * SLOW_SECONDS)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(request, url, "POST", RANK, rank_body)
            time.sleep(SLOW_SECONDS * 2 / 3)  # it is in progress (its own model call alone takes longer)
            process.send_signal(signal.SIGTERM)
            readiness = []
            for _ in range(500):  # until it is not 200 (or 5 s have passed)
                try:
                    readiness.append(request(url, "GET", "/readyz")[0])
                except ConnectionRefusedError:
                    readiness.append("refused")
                if readiness[-1] != 200:
                    break
                time.sleep(0.01)
            assert in_flight.result(30)[0] == 200
        assert process.wait(timeout=30) == 0
        stop.set()
        for client in clients:
            client.join(30)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
    assert readiness[-1] == 503, readiness  # readiness turned 503 while the in-flight request ran
    lost = [outcome for outcome in outcomes if outcome.startswith("lost")]
    assert not lost, lost
    assert "200" in outcomes and set(outcomes) <= {"200", "503"}, outcomes
    assert "Traceback" not in stderr.read_text()
