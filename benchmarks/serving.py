"""Serving speed: rank latency over HTTP against the in-process call, and throughput under load.

Needs an exported model: run ``mmoe run`` first (it writes ``runs/clicklog/export/clicklog/<v>``).
Two servers (``serving.server.serve``, with and without batching) run in child processes on free
loopback ports; clients are threads of this process, each with its own persistent keep-alive
``http.client.HTTPConnection`` (as a real client keeps its connections open).

Measures, for one rank request of ``--candidates`` candidates (default 100) whose features are
made up from the spec stored in the SavedModel:

* latency p50/p99 of the ``predict_raw`` call in process (the SavedModel loaded here, called back
  to back) and of ``POST :rank`` over HTTP by one client (request encoded once, response decoded),
  with and without server batching;
* throughput (requests/s) with 1, 8 and 32 concurrent clients, with and without batching.

The machine may be shared and noisy, so what is compared is measured side by side: the in-process
and HTTP latencies alternate in blocks of ``BLOCK`` calls over the same time window, and so do the
batching and non-batching servers' throughput windows. Ratios are taken within one run.

    .venv/bin/python benchmarks/serving.py                          # ~20 s plus two server starts
    .venv/bin/python benchmarks/serving.py --model-base runs/clicklog/export --seconds 60

Writes benchmarks/results/serving.json (and prints it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
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
import orjson  # noqa: E402
import tensorflow as tf  # noqa: E402

from feature_specs.tensors import TF_DTYPES, serving_columns  # noqa: E402
from serving.models import read_spec, resolve_model_dir  # noqa: E402
from serving.contract import existing_versions  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CONCURRENCY = (1, 8, 32)
BLOCK = 20  # calls per alternating latency block
ROUNDS = 3  # alternating throughput windows per server and concurrency


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


class InProcess:
    """The same ``predict_raw`` call the server makes, on the SavedModel loaded in this process."""

    def __init__(self, model_dir: str, version: int, request: dict, spec):
        model = tf.saved_model.load(os.path.join(model_dir, str(version)))
        self.function = model.signatures["predict_raw"]
        rows = [{**request["context"], **c} for c in request["candidates"]]
        self.arrays = {c.name: np.array([r[c.name] for r in rows], dtype=TF_DTYPES[c.dtype].as_numpy_dtype
                                        if c.dtype != "string" else object) for c in serving_columns(spec)}
        for _ in range(5):
            self.call()

    def call(self) -> None:
        outputs = self.function(**{k: tf.constant(v) for k, v in self.arrays.items()})
        np.argsort(-outputs["score"].numpy())  # the server sorts too


def timed_block(call, count: int) -> list[float]:
    """Seconds of each of ``count`` back-to-back calls."""
    timings = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings


def side_by_side_latency(in_process: InProcess, port: int, path: str, body: bytes, seconds: float) -> tuple[dict, dict]:
    """(in-process, HTTP) latency percentiles, alternating blocks of ``BLOCK`` calls for ``seconds``."""
    connection = Connection(port)
    http_call = functools.partial(http_rank, connection, path, body)
    for _ in range(5):
        http_call()
    local, remote, deadline = [], [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        local += timed_block(in_process.call, BLOCK)
        remote += timed_block(http_call, BLOCK)
    connection.close()
    return percentiles(local), percentiles(remote)


def http_rank(connection: "Connection", path: str, body: bytes) -> dict:
    """One rank request, its JSON answer decoded as serving.client.Client does (orjson)."""
    status, payload = connection.post(path, body)
    if status != 200:
        raise RuntimeError(f"rank failed: {status} {payload[:300]!r}")
    return orjson.loads(payload)


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
    """One persistent keep-alive HTTP/1.1 connection (``http.client``), reused for every request."""

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

    def close(self) -> None:
        self.connection.close()


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


def side_by_side_throughput(servers: dict[str, "ServerProcess"], path: str, body: bytes, seconds: float) -> dict:
    """``{label: {clients: rps}}``, the servers' windows alternating, ``seconds`` per server and concurrency."""
    done = {label: {c: 0.0 for c in CONCURRENCY} for label in servers}
    for clients in CONCURRENCY:
        for _ in range(ROUNDS):
            for label, server in servers.items():
                done[label][clients] += throughput(server.port, path, body, clients, seconds / ROUNDS)
    return {label: {str(c): round(rps / ROUNDS, 1) for c, rps in by_clients.items()} for label, by_clients in done.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    model_dir, name = resolve_model_dir(args.model_base, args.model_name)
    version = existing_versions(model_dir)[-1]
    spec = read_spec(os.path.join(model_dir, str(version)))
    request = rank_request(spec, args.candidates)
    body = json.dumps(request).encode()
    path = f"/v1/models/{name}:rank"
    # budget: 3 latency phases (batching: 2, in process and HTTP interleaved; no batching: 1) and
    # 6 throughput phases (2 servers x 3 concurrencies)
    phase = args.seconds / 9.0

    result = {"model": f"{model_dir}/{version}", "candidates": args.candidates, "seconds_per_phase": round(phase, 2),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__},
              "client": "one persistent keep-alive http.client.HTTPConnection per client thread",
              "method": f"in-process and HTTP latency alternate in blocks of {BLOCK} calls over the same window; "
                        f"batching and no-batching throughput windows alternate ({ROUNDS} rounds each)",
              "batching": {"batch_max_size": args.batch_max_size, "batch_timeout_ms": args.batch_timeout_ms}}
    in_process = InProcess(model_dir, version, request, spec)
    servers = {}
    try:
        for label, max_size in (("batching", args.batch_max_size), ("no_batching", 1)):
            servers[label] = ServerProcess(args.model_base, args.model_name, max_size, args.batch_timeout_ms)
        local, remote = side_by_side_latency(in_process, servers["batching"].port, path, body, 2 * phase)
        local_nb, remote_nb = side_by_side_latency(in_process, servers["no_batching"].port, path, body, phase)
        rps = side_by_side_throughput(servers, path, body, phase)
    finally:
        for server in servers.values():
            server.close()
    result["in_process"], result["http"], result["throughput_rps"] = local, remote, rps["batching"]
    result["http_overhead_p50_ratio"] = round(remote["p50_ms"] / local["p50_ms"], 2)
    result["no_batching"] = {"in_process": local_nb, "http": remote_nb, "throughput_rps": rps["no_batching"],
                             "http_overhead_p50_ratio": round(remote_nb["p50_ms"] / local_nb["p50_ms"], 2)}
    result["batching_gain_32_clients"] = round(rps["batching"]["32"] / rps["no_batching"]["32"], 2)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
