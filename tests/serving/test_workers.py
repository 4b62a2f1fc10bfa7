"""Many cores: worker processes sharing one port (SO_REUSEPORT), supervised by the parent.

The supervisor's restarts, failures and drain run with the TensorFlow-free targets of
``worker_targets.py`` (a fraction of a second per worker); one real two-worker server over the
session run's export checks the shared REST and gRPC ports, the worker pids and a SIGTERM
during a load loop.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, model_service_pb2_grpc

from feature_specs.tensors import serving_columns
from mmoe_cli import main as cli
from serving.metrics import METRICS_PATH
from serving.workers import default_workers, reserve_port

from rank_load import rank_until_refused

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
# runs run_workers over a worker_targets target: argv = target name, marker dir, max restarts
SUPERVISE = """
import functools, os, sys
import worker_targets
from feature_specs.errors import UserError
from serving.workers import run_workers

def on_ready(reports, port, grpc_port):
    print("ready", port, grpc_port, *sorted(r["pid"] for r in reports), flush=True)
    open(os.path.join(sys.argv[2], "pool.up"), "w").close()

try:
    run_workers(functools.partial(getattr(worker_targets, sys.argv[1]), sys.argv[2]), 2, "127.0.0.1", 0, 0,
                on_ready, max_restarts=int(sys.argv[3]),
                initializer=functools.partial(os.makedirs, os.path.join(sys.argv[2], "initialized"), exist_ok=True))
except UserError as error:
    print("user error:", error, error.exit_code, flush=True)
    sys.exit(error.exit_code)
"""


def supervise(target: str, marker_dir: Path, max_restarts: int = 3) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    return subprocess.Popen([sys.executable, "-c", SUPERVISE, target, str(marker_dir), str(max_restarts)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- the supervisor, without TensorFlow ------------------------------------------------------------


def test_a_dead_worker_is_restarted_and_sigterm_then_stops_every_worker_with_exit_0(tmp_path):
    process = supervise("die_once", tmp_path)
    try:
        ready = process.stdout.readline().split()
        assert ready[0] == "ready" and int(ready[1]) > 0 and int(ready[2]) > 0 and len(set(ready[3:])) == 2
        # the survivor and the restarted worker each wrote <pid>.up; the dead one never did
        wait_for(lambda: len(list(tmp_path.glob("*.up"))) == 3)
        workers_up = [up for up in tmp_path.glob("*.up") if up.name != "pool.up"]
        assert [up.read_text() for up in workers_up] == ["initialized"] * 2, "each ran the initializer first"
        metrics_dirs = {path.read_text() for path in tmp_path.glob("*.metrics")}
        assert len(metrics_dirs) == 1 and os.path.isdir(metrics_dirs.pop()), "one metrics directory for all workers"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not os.path.exists(next(tmp_path.glob("*.metrics")).read_text()), "removed once the workers stopped"
    stderr = process.stderr.read()
    assert "exited with code 3; restarting it (1 of 3 restarts within 60 s)" in stderr, stderr
    assert "Traceback" not in stderr


def test_a_worker_dying_past_the_restart_budget_stops_the_server_non_zero(tmp_path):
    process = supervise("die_always", tmp_path, max_restarts=1)
    try:
        assert process.wait(timeout=30) == 1
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert "WorkerFailed" in stderr and "after 1 restarts within 60 s; giving up" in stderr, stderr


def test_a_worker_failing_to_start_fails_the_server_with_its_user_error(tmp_path):
    process = supervise("refuse_start", tmp_path)
    try:
        assert process.wait(timeout=30) == 2
    finally:
        if process.poll() is None:
            process.kill()
    stdout = process.stdout.read()
    assert stdout.startswith("user error: model directory") and stdout.strip().endswith("export one first 2"), stdout
    assert "Traceback" not in process.stderr.read()  # the worker's user error, told once by the parent


def test_a_reserved_port_is_shared_by_reuse_port_sockets_only():
    with reserve_port("127.0.0.1", 0) as reserved:
        port = reserved.getsockname()[1]
        with reserve_port("127.0.0.1", port) as worker:
            worker.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # the listening worker answers; the reserved socket never listens
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # another program cannot take it meanwhile


def test_mmoe_serve_passes_workers_defaulting_to_the_cpus_it_may_use(monkeypatch):
    import serving.launch

    calls = []
    monkeypatch.setattr(cli, "start_tensorflow_quietly", lambda verbose: None)
    monkeypatch.setattr(serving.launch, "serve", lambda *args, **kwargs: calls.append(kwargs))
    assert cli.main(["serve", "--model-base", "b"]) == 0
    assert cli.main(["serve", "--model-base", "b", "--workers", "3"]) == 0
    assert [call["workers"] for call in calls] == [len(os.sched_getaffinity(0)), 3] == [default_workers(), 3]
    with pytest.raises(SystemExit) as refused:
        cli.main(["serve", "--model-base", "b", "--workers", "0"])
    assert refused.value.code == 2 and len(calls) == 2


# -- a real server of two workers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rank_body(trained_run) -> bytes:
    """A rank request of 100 candidates, each feature at its lower bound (or default, or 0 / "x")."""
    def value(column):
        if column.dtype == "string":
            return column.default if column.default is not None else "x"
        return column.min if column.min is not None else (column.default or 0)
    candidate = {c.name: value(c) for c in serving_columns(trained_run.spec)}
    return json.dumps({"candidates": [candidate] * 100}).encode()


def worker_pid(response: http.client.HTTPResponse) -> int:
    return int(re.search(r"worker/(\d+)", response.getheader("Server"))[1])


def scrape(port: int) -> dict:
    """The metrics page of whichever worker the new connection reaches, parsed by prometheus-client."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", METRICS_PATH)
        return {f.name: f for f in text_string_to_metric_families(connection.getresponse().read().decode())}
    finally:
        connection.close()


def ready_count(families: dict) -> float:
    return sum(s.value for s in families["mmoe_serving_requests"].samples
               if s.name.endswith("_total") and s.labels["endpoint"] == "readyz")


@pytest.mark.slow
def test_two_workers_share_the_ports_and_metrics_and_sigterm_during_a_load_loop_loses_no_accepted_request(
        trained_run, rank_body, tmp_path):
    shutil.copytree(trained_run.export_path, tmp_path / "clicklog" / "1")
    code = (f"from serving.launch import serve; serve({str(tmp_path)!r}, 'clicklog', port=0, grpc_port=0, "
            "poll_seconds=0, workers=2); import sys; print('parent imported tensorflow:', 'tensorflow' in sys.modules)")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as errors:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=errors, text=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    outcomes: list[str] = []  # each request's status, or the error that lost it
    stop = threading.Event()
    try:
        banner = process.stdout.readline()
        found = re.search(r"at http://127\.0\.0\.1:(\d+) and gRPC at 127\.0\.0\.1:(\d+) with 2 workers "
                          r"\(pids (\d+), (\d+)\)$", banner.strip())
        assert found, banner
        port, grpc_port, pids = int(found[1]), int(found[2]), {int(found[3]), int(found[4])}
        assert len(pids) == 2 and process.pid not in pids

        answered_by = set()
        for _ in range(40):  # each on a new connection: the kernel spreads them over both workers
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["versions"] == [1]
            answered_by.add(worker_pid(response))
            connection.close()
        assert answered_by == pids
        # the metrics are the server's: whichever worker answers the scrape counts both workers' requests
        # (a request is counted just after its answer is sent: the last one may lag a scrape by microseconds)
        scrapes = []
        wait_for(lambda: scrapes.append(scrape(port)) or ready_count(scrapes[-1]) >= 40, 10)
        assert ready_count(scrapes[-1]) == 40
        loaded = {s.labels["version"]: s.value for s in scrapes[-1]["mmoe_serving_model_version_loaded"].samples}
        assert loaded == {"1": 2.0}, "both workers serve version 1"
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:  # the gRPC port is shared too
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="clicklog")), timeout=30)
        assert [(v.version, v.state) for v in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]

        # a new connection whenever one is closed: a draining worker answers 503 while another serves
        clients = [threading.Thread(target=rank_until_refused, args=(port, rank_body, outcomes, stop, True))
                   for _ in range(8)]
        for client in clients:
            client.start()
        wait_for(lambda: outcomes.count("200") >= 40, 30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout.read().strip() == "parent imported tensorflow: False", "the supervisor stays small"
        time.sleep(0.2)
        stop.set()
        for client in clients:
            client.join(30)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
    lost = [outcome for outcome in outcomes if outcome.startswith("lost")]
    assert not lost, lost
    assert set(outcomes) <= {"200", "503"}, outcomes
    assert "Traceback" not in stderr.read_text()


def test_mmoe_serve_with_workers_on_a_wrong_model_directory_fails_in_one_line(tmp_path):
    """The supervisor does not import TensorFlow to check the directory: the workers find it wrong
    and the parent exits 2 with their one-line error."""
    missing = tmp_path / "no-such-export"
    command = "import sys; from mmoe_cli.main import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", command, "serve", "--model-base", str(missing), "--workers", "2",
                             "--port", "0", "--no-grpc"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"mmoe: no SavedModel versions under {missing}"), result.stderr
    assert "Traceback" not in result.stderr
