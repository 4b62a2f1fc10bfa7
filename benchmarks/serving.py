"""Serving speed: rank latency over HTTP against the in-process call, and throughput under load.

Needs an exported model: run ``mmoe run`` first (it writes ``runs/clicklog/export/clicklog/<v>``).
The server runs in a separate process on a free loopback port (``serving.server.serve``); clients
are threads of this process, each with its own keep-alive connection.

Measures, for one rank request of ``--candidates`` candidates (default 100) whose features are
made up from the spec stored in the SavedModel:

* latency p50/p99 of the ``predict_raw`` call in process (the SavedModel loaded here) and of
  ``POST :rank`` over HTTP by one client, with and without server batching;
* throughput (requests/s) with 1, 8 and 32 concurrent clients, with and without batching.

    .venv/bin/python benchmarks/serving.py                          # ~20 s
    .venv/bin/python benchmarks/serving.py --model-base runs/clicklog/export --seconds 60

Writes benchmarks/results/serving.json (and prints it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from feature_specs.tensors import TF_DTYPES, serving_columns  # noqa: E402
from serving.models import read_spec, resolve_model_dir  # noqa: E402
from serving.export import existing_versions  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CONCURRENCY = (1, 8, 32)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base", default="runs/clicklog/export",
                        help="export base holding <name>/<version>/ (default: %(default)s, made by `mmoe run`)")
    parser.add_argument("--model-name", default=None, help="model name (default: the only one under --model-base)")
    parser.add_argument("--seconds", type=float, default=20.0, help="total time budget of the measurements")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per rank request")
    parser.add_argument("--batch-max-size", type=int, default=4096, help="server batching: most rows per call")
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0, help="server batching: longest wait")
    parser.add_argument("--output", default=os.path.join(RESULTS, "serving.json"))
    return parser.parse_args(argv)


def rank_request(spec, candidates: int, seed: int = 0) -> dict:
    """A rank request with made-up values: the first string feature is shared context."""
    rng = np.random.default_rng(seed)
    columns = serving_columns(spec)

    def value(column, i):
        if column.dtype == "string":
            return f"{column.name}-{rng.integers(0, 200)}"
        low = column.min if column.min is not None else 0
        high = column.max if column.max is not None else low + 100
        if column.dtype == "float":
            return float(rng.uniform(low, high))
        return int(rng.integers(int(low), int(high) + 1))

    shared = columns[0].name
    return {
        "context": {shared: value(columns[0], 0)},
        "candidates": [{c.name: value(c, i) for c in columns if c.name != shared} for i in range(candidates)],
    }


def percentiles(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(values, 50)), 3), "p99_ms": round(float(np.percentile(values, 99)), 3),
            "requests": len(values)}


def in_process_latency(model_dir: str, version: int, request: dict, spec, seconds: float) -> dict:
    """The same predict_raw call the server makes, on the SavedModel loaded in this process."""
    model = tf.saved_model.load(os.path.join(model_dir, str(version)))
    function = model.signatures["predict_raw"]
    rows = [{**request["context"], **c} for c in request["candidates"]]
    columns = serving_columns(spec)
    arrays = {c.name: np.array([r[c.name] for r in rows], dtype=TF_DTYPES[c.dtype].as_numpy_dtype
                               if c.dtype != "string" else object) for c in columns}
    for _ in range(5):
        function(**{k: tf.constant(v) for k, v in arrays.items()})
    timings, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        outputs = function(**{k: tf.constant(v) for k, v in arrays.items()})
        np.argsort(-outputs["score"].numpy())  # the server sorts too
        timings.append(time.perf_counter() - start)
    return percentiles(timings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``serving.server.serve`` in a child process on a free loopback port."""

    def __init__(self, model_base: str, model_name: str | None, batch_max_size: int, batch_timeout_ms: float):
        self.port = free_port()
        code = ("import sys; sys.path.insert(0, %r); from serving.server import serve; "
                "serve(%r, %r, port=%d, batch_max_size=%d, batch_timeout_ms=%r, poll_seconds=0)"
                % (ROOT, model_base, model_name, self.port, batch_max_size, batch_timeout_ms))
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                status, _ = Connection(self.port).get("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError("server did not become ready in 120 s")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Connection:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, bytes]:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        return response.status, response.read()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()


def http_latency(port: int, path: str, body: bytes, seconds: float) -> dict:
    connection = Connection(port)
    for _ in range(5):
        connection.post(path, body)
    timings, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        status, payload = connection.post(path, body)
        json.loads(payload)
        timings.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"rank failed: {status} {payload[:300]!r}")
    return percentiles(timings)


def throughput(port: int, path: str, body: bytes, clients: int, seconds: float) -> float:
    """Completed rank requests per second with ``clients`` concurrent keep-alive clients."""
    stop = threading.Event()
    start_barrier = threading.Barrier(clients + 1)

    def client() -> int:
        try:
            connection = Connection(port)
            connection.post(path, body)
        finally:
            start_barrier.wait(timeout=120)  # never leave the others waiting, even after an error
        done = 0
        while not stop.is_set():
            status, payload = connection.post(path, body)
            if status != 200:
                raise RuntimeError(f"rank failed: {status} {payload[:300]!r}")
            done += 1
        return done

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        start_barrier.wait(timeout=120)
        began = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        total = sum(f.result() for f in futures)
        elapsed = time.perf_counter() - began
    return round(total / elapsed, 1)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model_dir, name = resolve_model_dir(args.model_base, args.model_name)
    version = existing_versions(model_dir)[-1]
    spec = read_spec(os.path.join(model_dir, str(version)))
    request = rank_request(spec, args.candidates)
    body = json.dumps(request).encode()
    path = f"/v1/models/{name}:rank"
    # budget: 3 latency phases and 6 throughput phases
    phase = args.seconds / 9.0

    result = {"model": f"{model_dir}/{version}", "candidates": args.candidates, "seconds_per_phase": round(phase, 2),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__},
              "batching": {"batch_max_size": args.batch_max_size, "batch_timeout_ms": args.batch_timeout_ms}}
    result["in_process"] = in_process_latency(model_dir, version, request, spec, phase)
    for label, max_size in (("batching", args.batch_max_size), ("no_batching", 1)):
        server = ServerProcess(args.model_base, args.model_name, max_size, args.batch_timeout_ms)
        try:
            latency = http_latency(server.port, path, body, phase)
            rps = {str(c): throughput(server.port, path, body, c, phase) for c in CONCURRENCY}
        finally:
            server.close()
        if label == "batching":
            result["http"], result["throughput_rps"] = latency, rps
        else:
            result["no_batching"] = {"http": latency, "throughput_rps": rps}
    result["http_overhead_p50_ratio"] = round(result["http"]["p50_ms"] / result["in_process"]["p50_ms"], 2)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
