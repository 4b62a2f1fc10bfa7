"""Worker targets for :func:`serving.workers.run_workers` without TensorFlow, so that the
supervisor's restarts, failures and drain are tested in a fraction of a second per worker.

Each follows the target contract: ``target(marker_dir, port=, grpc_port=, report=)``; ``marker_dir``
(a str) lets a target tell its first start from a restart. Run by ``python -m``-free scripts in
tests/serving/test_workers.py, with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import threading

from feature_specs.errors import UserError


def _wait_for_pool(marker_dir: str) -> None:
    """Until the supervising script's ``on_ready`` wrote ``pool.up``: every worker reported."""
    while not os.path.exists(os.path.join(marker_dir, "pool.up")):
        threading.Event().wait(0.02)


def _report(report, port: int) -> None:
    report({"pid": os.getpid(), "model": "fake", "versions": [1], "ready": True, "port": port})


def serve_until_sigterm(marker_dir: str, *, port: int, grpc_port: int | None, report) -> None:
    """Reports, then waits for SIGTERM and returns (a clean drain); writes ``<pid>.up`` first."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    with open(os.path.join(marker_dir, f"{os.getpid()}.up"), "w") as up:  # "initialized": the initializer ran first
        up.write("initialized" if os.path.isdir(os.path.join(marker_dir, "initialized")) else "")
    with open(os.path.join(marker_dir, f"{os.getpid()}.metrics"), "w") as metrics:  # the shared metrics directory
        metrics.write(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))
    _report(report, port)
    while not stopped.wait(0.05):
        pass


def die_once(marker_dir: str, *, port: int, grpc_port: int | None, report) -> None:
    """The first process to run it reports, then exits 3 (as if killed); later ones serve."""
    try:
        os.close(os.open(os.path.join(marker_dir, "died"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        serve_until_sigterm(marker_dir, port=port, grpc_port=grpc_port, report=report)
        return
    _report(report, port)
    _wait_for_pool(marker_dir)
    os._exit(3)


def die_always(marker_dir: str, *, port: int, grpc_port: int | None, report) -> None:
    """Reports, then exits 3 once the pool came up: every restart dies too."""
    _report(report, port)
    _wait_for_pool(marker_dir)
    os._exit(3)


def refuse_start(marker_dir: str, *, port: int, grpc_port: int | None, report) -> None:
    """Fails before listening, on a user's mistake."""
    raise UserError(f"model directory {marker_dir!r} holds no SavedModel; export one first")
