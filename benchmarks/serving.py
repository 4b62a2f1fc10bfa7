"""Serving speed: rank latency over REST, gRPC and the Open Inference Protocol v2 against the
in-process call, and throughput under load, with one and two server workers.

Needs an exported model: run ``mmoe run`` first (it writes ``runs/clicklog/export/clicklog/<v>``).
Servers (``serving.launch.serve``: with batching and TF Serving's gRPC API, without batching, and
with ``workers=2``) run in child processes on free loopback ports. Latency and the 1/8/32-client
throughput are driven by threads of this process, each with its own persistent keep-alive
``http.client.HTTPConnection`` or its own gRPC channel (as a real client keeps its connections
open); the worker sweep's 32 clients are threads of ``CLIENT_PROCESSES`` separate client processes
(``benchmarks/load_clients.py``), so one client GIL does not cap what two workers can answer.

Measures, for one rank of ``--candidates`` candidates (default 100) whose features are made up
from the spec stored in the SavedModel:

* latency p50/p99, by one client, of the ``predict_raw`` call in process (the SavedModel loaded
  here, called back to back), of ``POST /v1/models/<name>:rank`` (REST, request encoded once,
  response decoded), of ``PredictionService.Predict`` on ``predict_raw`` with the stock
  tensorflow-serving-api stub (request built once, outputs decoded with ``tf.make_ndarray`` and
  sorted) and of ``POST /v2/models/<name>/infer`` (OIP v2, request encoded once, response decoded
  and sorted), with batching; in process and REST without batching too;
* the transport's floor in the same window: ``GET /v1/models/<name>`` and
  ``ModelService.GetModelStatus`` on the same connections, round trips that run no model
  (``transport_floor``), and each protocol's p50 minus the in-process call's (``overhead_ms_p50``);
* throughput (requests/s) with 1, 8 and 32 concurrent REST clients, with and without batching,
  and candidates scored per second at 32 clients;
* requests/s and candidates/s of REST ``:rank`` at 32 clients with ``workers`` 1 and 2.

The machine may be shared and noisy, so what is compared is measured side by side: the in-process,
REST, gRPC and OIP v2 latencies alternate in blocks of ``BLOCK`` calls over the same time window,
and the throughput windows of the servers compared (batching vs not, 1 vs 2 workers) alternate.
Ratios are taken within one run.

    .venv/bin/python benchmarks/serving.py                          # ~60 s plus three server starts
    .venv/bin/python benchmarks/serving.py --model-base runs/clicklog/export --seconds 8 --output /tmp/s.json

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
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2, model_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from feature_specs.tensors import TF_DTYPES, serving_columns  # noqa: E402
from serving.contract import RANK_SIGNATURE, existing_versions  # noqa: E402
from serving.models import read_spec, resolve_model_dir  # noqa: E402
from serving.oip_v2 import DATATYPES  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe_cpu  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CONCURRENCY = (1, 8, 32)
BLOCK = 20  # calls per alternating latency block
ROUNDS = 3  # alternating throughput windows per server and concurrency
WORKERS = (1, 2)  # the worker-count sweep
SWEEP_CLIENTS = 32  # concurrent clients of the worker sweep
CLIENT_PROCESSES = 2  # processes the sweep's clients are spread over (benchmarks/load_clients.py)
LOAD_CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load_clients.py")
# the budget in phases: latency 5 (4 calls alternating with batching, 1 phase each; in process and
# REST without batching, 1), throughput 6 (2 servers x 3 concurrencies), worker sweep 2 (2 counts)
PHASES = 13


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base", default="runs/clicklog/export",
                        help="export base holding <name>/<version>/ (default: %(default)s, made by `mmoe run`)")
    parser.add_argument("--model-name", default=None, help="model name (default: the only one under --model-base)")
    parser.add_argument("--seconds", type=float, default=60.0, help="total time budget of the measurements")
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
        self.dtypes = {c.name: TF_DTYPES[c.dtype] for c in serving_columns(spec)}
        self.arrays = {c.name: np.array([r[c.name] for r in rows], dtype=TF_DTYPES[c.dtype].as_numpy_dtype
                                        if c.dtype != "string" else object) for c in serving_columns(spec)}
        for _ in range(5):
            self.call()

    def call(self) -> None:
        outputs = self.function(**{k: tf.constant(v) for k, v in self.arrays.items()})
        np.argsort(-outputs["score"].numpy())  # the server sorts too


def oip_infer_body(arrays: dict[str, np.ndarray], dtypes: dict[str, tf.DType]) -> bytes:
    """The OIP v2 ``/infer`` body of the same rows: one ``{"name", "shape", "datatype", "data"}``
    input per ``predict_raw`` input (``arrays``: name -> 1-D numpy array; ``dtypes``: their tf dtypes)."""
    inputs = [{"name": name, "shape": [len(array)], "datatype": DATATYPES[dtypes[name]], "data": array.tolist()}
              for name, array in arrays.items()]
    return json.dumps({"inputs": inputs}).encode()


def oip_infer(connection: "Connection", path: str, body: bytes) -> None:
    """One OIP v2 infer: the answer decoded (orjson) and its scores sorted, as the rank endpoint does."""
    status, payload = connection.post(path, body)
    if status != 200:
        raise RuntimeError(f"infer failed: {status} {payload[:300]!r}")
    outputs = {output["name"]: output["data"] for output in orjson.loads(payload)["outputs"]}
    np.argsort(-np.asarray(outputs["score"]))


class GrpcClient:
    """One gRPC channel and the stock ``PredictionServiceStub``; ``call`` sends ``predict_raw``
    on the rows of ``arrays`` (name -> 1-D numpy array, ``dtypes`` their tf dtypes), the
    PredictRequest built once, and decodes every output (``tf.make_ndarray``) and sorts the scores."""

    def __init__(self, port: int, name: str, arrays: dict[str, np.ndarray], dtypes: dict[str, tf.DType]):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.status_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.status_request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=name))
        self.request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=name, signature_name=RANK_SIGNATURE))
        for key, array in arrays.items():
            self.request.inputs[key].CopyFrom(tf.make_tensor_proto(array, dtype=dtypes[key]))

    def call(self) -> None:
        response = self.stub.Predict(self.request, timeout=60)
        outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
        np.argsort(-outputs["score"])

    def status(self) -> None:
        """``ModelService.GetModelStatus``: a round trip that runs no model (the transport's floor)."""
        self.status_stub.GetModelStatus(self.status_request, timeout=60)

    def close(self) -> None:
        self.channel.close()


def timed_block(call, count: int) -> list[float]:
    """Seconds of each of ``count`` back-to-back calls."""
    timings = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings


def side_by_side_latency(calls: dict, seconds: float) -> dict[str, dict]:
    """``{label: percentiles}`` of ``calls`` (label -> no-argument callable), each warmed up, then
    their blocks of ``BLOCK`` calls alternating for ``seconds``."""
    for call in calls.values():
        for _ in range(5):
            call()
    timings = {label: [] for label in calls}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for label, call in calls.items():
            timings[label] += timed_block(call, BLOCK)
    return {label: percentiles(values) for label, values in timings.items()}


def http_status(connection: "Connection", path: str) -> None:
    """``GET /v1/models/<name>``: a REST round trip that runs no model (the transport's floor)."""
    status, payload = connection.get(path)
    if status != 200:
        raise RuntimeError(f"model status failed: {status} {payload[:300]!r}")


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
    """``serving.launch.serve`` in a child process on free loopback ports: REST on ``port``, gRPC
    on ``grpc_port`` when ``grpc`` (else None), ``workers`` processes sharing them."""

    def __init__(self, model_base: str, model_name: str | None, batch_max_size: int, batch_timeout_ms: float,
                 grpc: bool = False, workers: int = 1):
        self.port = free_port()
        self.grpc_port = free_port() if grpc else None
        code = ("import sys; sys.path.insert(0, %r); from serving.launch import serve; "
                "serve(%r, %r, port=%d, batch_max_size=%d, batch_timeout_ms=%r, poll_seconds=0, grpc_port=%r, "
                "workers=%d)"
                % (ROOT, model_base, model_name, self.port, batch_max_size, batch_timeout_ms, self.grpc_port, workers))
        self.log = tempfile.TemporaryFile()  # the server's stderr: a file, so its logging never blocks on a pipe
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                        stderr=self.log, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        deadline, pids = time.monotonic() + 120, set()  # the Server headers seen: one per ready worker
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read().decode()[-2000:]}")
            try:
                connection = Connection(self.port)  # a new connection: SO_REUSEPORT spreads them over workers
                status, _ = connection.get("/readyz")
                if status == 200:
                    pids.add(connection.server_header)
                    if len(pids) >= workers:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"server did not become ready with {workers} worker(s) in 120 s")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Connection:
    """One persistent keep-alive HTTP/1.1 connection (``http.client``), reused for every request."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.server_header = None  # the last answer's Server header (names the worker's pid with workers)

    def get(self, path: str) -> tuple[int, bytes]:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        self.server_header = response.getheader("Server")
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


def process_clients_throughput(port: int, path: str, body_file: str, clients: int, seconds: float) -> float:
    """Completed requests per second of ``clients`` keep-alive clients spread over
    ``CLIENT_PROCESSES`` processes of ``benchmarks/load_clients.py``, over one shared window."""
    processes = min(CLIENT_PROCESSES, clients)
    start_at = time.time() + 2.0  # time for the processes to start, connect and warm up
    jobs = []
    for index in range(processes):
        threads = clients // processes + (index < clients % processes)
        job = {"port": port, "path": path, "body_file": body_file, "threads": threads, "start_at": start_at,
               "seconds": seconds}
        jobs.append(subprocess.Popen([sys.executable, LOAD_CLIENTS, json.dumps(job)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE))
    done = 0
    for child in jobs:
        out, err = child.communicate(timeout=seconds + 120)
        if child.returncode != 0:
            raise RuntimeError(f"load clients failed: {err.decode()[-2000:]}")
        done += json.loads(out)["done"]
    return done / seconds


def worker_sweep(servers: dict[int, "ServerProcess"], path: str, body_file: str, candidates: int,
                 seconds: float) -> dict:
    """``{"<workers>": {"rps", "candidates_per_s"}}`` at ``SWEEP_CLIENTS`` clients, the servers'
    windows alternating, ``seconds`` per server in all."""
    done = {workers: 0.0 for workers in servers}
    for _ in range(ROUNDS):
        for workers, server in servers.items():
            done[workers] += process_clients_throughput(server.port, path, body_file, SWEEP_CLIENTS, seconds / ROUNDS)
    return {str(workers): {"rps": round(rps / ROUNDS, 1), "candidates_per_s": round(rps / ROUNDS * candidates)}
            for workers, rps in done.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    model_dir, name = resolve_model_dir(args.model_base, args.model_name)
    version = existing_versions(model_dir)[-1]
    spec = read_spec(os.path.join(model_dir, str(version)))
    request = rank_request(spec, args.candidates)
    body = json.dumps(request).encode()
    path, infer_path = f"/v1/models/{name}:rank", f"/v2/models/{name}/infer"
    phase = args.seconds / PHASES

    cpu = describe_cpu()
    result = {"model": f"{model_dir}/{version}", "candidates": args.candidates, "seconds_per_phase": round(phase, 2),
              "machine": {"cpus": os.cpu_count(), "cpu": cpu["model"], "cpu_features": cpu["features"],
                          "python": platform.python_version(),
                          "tensorflow": tf.__version__, "grpcio": grpc.__version__,
                          "note": "shared and noisy: other people's jobs run on the same cores"},
              "client": "one persistent keep-alive http.client.HTTPConnection (REST, OIP v2) or one gRPC channel "
                        "with the stock tensorflow-serving-api PredictionServiceStub (gRPC) per client thread; "
                        f"the worker sweep's {SWEEP_CLIENTS} clients are threads of {CLIENT_PROCESSES} client "
                        "processes (benchmarks/load_clients.py)",
              "method": f"in-process, REST, gRPC and OIP v2 latency alternate in blocks of {BLOCK} calls over the "
                        f"same window; batching and no-batching throughput windows alternate, and so do the "
                        f"1- and 2-worker windows ({ROUNDS} rounds each)",
              "batching": {"batch_max_size": args.batch_max_size, "batch_timeout_ms": args.batch_timeout_ms}}
    in_process = InProcess(model_dir, version, request, spec)
    infer_body = oip_infer_body(in_process.arrays, in_process.dtypes)
    servers, opened = {}, []
    try:
        servers["batching"] = ServerProcess(args.model_base, args.model_name, args.batch_max_size,
                                            args.batch_timeout_ms, grpc=True)
        servers["no_batching"] = ServerProcess(args.model_base, args.model_name, 1, args.batch_timeout_ms)
        servers["workers_2"] = ServerProcess(args.model_base, args.model_name, args.batch_max_size,
                                             args.batch_timeout_ms, grpc=True, workers=2)
        batching = servers["batching"]
        rest, infer = Connection(batching.port), Connection(batching.port)
        stub = GrpcClient(batching.grpc_port, name, in_process.arrays, in_process.dtypes)
        opened += [rest, infer, stub]
        latency = side_by_side_latency({"in_process": in_process.call,
                                        "http": functools.partial(http_rank, rest, path, body),
                                        "grpc": stub.call,
                                        "oip_v2": functools.partial(oip_infer, infer, infer_path, infer_body),
                                        "http_status": functools.partial(http_status, rest, f"/v1/models/{name}"),
                                        "grpc_status": stub.status},
                                       4 * phase)
        rest_nb = Connection(servers["no_batching"].port)
        opened.append(rest_nb)
        latency_nb = side_by_side_latency({"in_process": in_process.call,
                                           "http": functools.partial(http_rank, rest_nb, path, body)}, phase)
        for client in opened:
            client.close()
        rps = side_by_side_throughput({label: servers[label] for label in ("batching", "no_batching")},
                                      path, body, phase)
        body_file = os.path.join(tempfile.mkdtemp(prefix="bench_serving_"), "rank.json")
        with open(body_file, "wb") as handle:
            handle.write(body)
        workers = worker_sweep({1: batching, 2: servers["workers_2"]}, path, body_file, args.candidates, phase)
    finally:
        for server in servers.values():
            server.close()
    local = latency["in_process"]
    result["in_process"], result["http"], result["throughput_rps"] = local, latency["http"], rps["batching"]
    result["grpc"], result["oip_v2"] = latency["grpc"], latency["oip_v2"]
    result["http_overhead_p50_ratio"] = round(latency["http"]["p50_ms"] / local["p50_ms"], 2)
    result["overhead_ratio_to_in_process"] = {
        protocol: {"p50": round(latency[protocol]["p50_ms"] / local["p50_ms"], 2),
                   "p99": round(latency[protocol]["p99_ms"] / local["p99_ms"], 2)}
        for protocol in ("http", "grpc", "oip_v2")}
    result["overhead_ms_p50"] = {protocol: round(latency[protocol]["p50_ms"] - local["p50_ms"], 3)
                                 for protocol in ("http", "grpc", "oip_v2")}
    result["transport_floor"] = {
        "http": latency["http_status"], "grpc": latency["grpc_status"],
        "what": "GET /v1/models/<name> and ModelService.GetModelStatus on the same connections, in the same "
                "alternating window: a round trip through client, transport and server that runs no model"}
    result["candidates_per_s_32_clients"] = round(rps["batching"]["32"] * args.candidates)
    result["workers"] = workers
    result["workers_method"] = (f"REST :rank, {SWEEP_CLIENTS} clients in {CLIENT_PROCESSES} processes, "
                                f"serve(workers=N) in a child process, batching on")
    result["no_batching"] = {"in_process": latency_nb["in_process"], "http": latency_nb["http"],
                             "throughput_rps": rps["no_batching"],
                             "http_overhead_p50_ratio": round(latency_nb["http"]["p50_ms"]
                                                              / latency_nb["in_process"]["p50_ms"], 2)}
    result["batching_gain_32_clients"] = round(rps["batching"]["32"] / rps["no_batching"]["32"], 2)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
