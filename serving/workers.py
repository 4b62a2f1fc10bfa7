"""Many cores: several server processes share one REST (and gRPC) port, supervised by a parent.

One Python process answers on about one core (the GIL), so :func:`run_workers` starts ``count``
worker processes, each with its own copy of the model's versions, batchers, limits and metrics,
and each binding the same port with ``SO_REUSEPORT`` (Linux): the kernel spreads new connections
over them. The parent binds (never listens on) a ``SO_REUSEPORT`` socket on each port first, so a
port 0 becomes one free port that every worker then binds, and the port stays held while a worker
restarts.

Workers are started with multiprocessing's ``spawn`` context (a fresh interpreter: a process
holding TensorFlow's threads is never forked). Each one blocks SIGTERM until its server installed
its drain handler and ignores SIGINT: the parent owns the signals. On SIGTERM (or Ctrl-C) the
parent forwards SIGTERM to every worker, each drains as a single server does
(:meth:`serving.server.ModelServer.stop`) and exits 0, and :func:`run_workers` returns once all
have exited 0.

A worker that dies while the server runs (killed, out of memory) is restarted, logged as a
warning, at most :data:`DEFAULT_MAX_RESTARTS` times within :data:`RESTART_WINDOW_SECONDS`; past
that budget, or when a worker fails before the pool first came up (a bad model directory or flag
fails the same way in every worker), the others are stopped and :class:`WorkerFailed` (or the
worker's :class:`~feature_specs.errors.UserError`) is raised, so the process exits non-zero.

Memory: every worker holds its own TensorFlow runtime and model copy, so N workers take about N
times one server's resident memory (about 0.7 GiB resident each for the bundled clicklog model,
measured; nearly all of it TensorFlow's runtime, the SavedModel's weights add their size per
loaded version), and each loads the model at start (seconds: TensorFlow's import and the load).

Metrics are the server's, not a worker's: the parent gives the workers one directory (a fresh
temporary one, removed at exit, unless ``PROMETHEUS_MULTIPROC_DIR`` is set already) for
prometheus-client's multiprocess mode, so a scrape through the shared port, whichever worker it
reaches, shows the counts of all of them (:mod:`serving.metrics`); a dead worker's live gauges are
dropped (``mark_process_dead``) before it is restarted.

Plain standard library at import (the command line reads :func:`default_workers` without
TensorFlow); the worker's server is the ``target`` the caller passes in.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Callable, Sequence

from feature_specs.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MAX_RESTARTS = 3  # unexpected worker exits restarted within RESTART_WINDOW_SECONDS
RESTART_WINDOW_SECONDS = 60.0
_SPAWN = multiprocessing.get_context("spawn")

# what a worker reports to the parent once its server listens: pid, model, versions, ready (its /readyz)
Report = dict


class WorkerFailed(RuntimeError):
    """A worker failed to start, or kept dying past the restart budget."""


def default_workers() -> int:
    """The default worker count: the CPUs this process may run on (its affinity, which a
    container's cpuset or ``taskset`` narrows), else the machine's CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def reserve_port(host: str, port: int, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """Binds, without listening, a ``SO_REUSEPORT`` socket: it holds ``port`` (a free one when 0)
    for workers that bind it with ``SO_REUSEPORT`` too, and never receives a connection itself.

    Args:
        host: str. The address the workers bind, e.g. ``127.0.0.1``.
        port: int. The port; 0 picks a free one (read it from ``getsockname()[1]``).
        family: the socket family the workers' servers bind.

    Raises:
        OSError: if the port is taken by a socket without ``SO_REUSEPORT`` (another program).
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    return sock


def worker_main(initializer: Callable[[], None] | None, target: bytes, port: int, grpc_port: int | None,
                reports: multiprocessing.connection.Connection) -> None:
    """A worker process's entry point: runs ``initializer()``, then ``target(port=, grpc_port=, report=)``,
    which serves in the foreground, calls ``report(Report)`` once it listens and returns after its drain.

    ``target`` arrives pickled and is unpickled only after ``initializer`` ran: unpickling it
    imports its module (the server, hence TensorFlow), whose start-up the initializer may need to
    arrange first (logging, quiet native start-up lines).

    A :class:`UserError` (or a ``FileNotFoundError``: a model directory that does not exist, which
    the parent does not check itself, to stay free of TensorFlow) is sent to the parent (which
    raises it as a :class:`UserError`) and ends the worker with its exit code, without a
    traceback; any other exception is sent and re-raised.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # until the server's drain handler is installed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which forwards SIGTERM
    try:
        if initializer is not None:
            initializer()
        pickle.loads(target)(port=port, grpc_port=grpc_port, report=reports.send)
    except (UserError, FileNotFoundError) as error:  # a user's mistake (a wrong model directory: the latter)
        exit_code = getattr(error, "exit_code", UserError.exit_code)
        reports.send({"pid": os.getpid(), "user_error": str(error), "exit_code": exit_code})
        raise SystemExit(exit_code) from None
    except BaseException as error:
        reports.send({"pid": os.getpid(), "error": f"{type(error).__name__}: {error}"})
        raise


class _Pool:
    """The worker processes, their report pipes, and the restart budget."""

    def __init__(self, target: Callable[..., None], count: int, port: int, grpc_port: int | None, max_restarts: int,
                 restart_window: float, initializer: Callable[[], None] | None = None):
        self.target, self.count, self.port, self.grpc_port = pickle.dumps(target), count, port, grpc_port
        self.initializer = initializer
        self.max_restarts, self.restart_window = max_restarts, restart_window
        self.processes: list = [None] * count
        self.pipes: list = [None] * count
        self.reports: list[Report | None] = [None] * count
        self.restarts: collections.deque[float] = collections.deque()
        self.stopping = False
        self.metrics_dir: str | None = None  # prometheus-client's multiprocess directory, while running

    def start(self, slot: int) -> None:
        receive, send = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(target=worker_main, args=(self.initializer, self.target, self.port, self.grpc_port, send),
                                 name=f"mmoe-serving-worker-{slot}", daemon=False)
        process.start()
        send.close()  # the worker holds its end: EOF here once it exits
        self.processes[slot], self.pipes[slot], self.reports[slot] = process, receive, None

    def live(self) -> list:
        return [p for p in self.processes if p is not None and p.exitcode is None]

    def terminate(self) -> None:
        """Forwards SIGTERM to every live worker (each drains once; a second changes nothing)."""
        self.stopping = True
        for process in self.live():
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def may_restart(self) -> bool:
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.restart_window:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            return False
        self.restarts.append(now)
        return True


def run_workers(target: Callable[..., None], count: int, host: str, port: int, grpc_port: int | None,
                on_ready: Callable[[Sequence[Report], int, int | None], None],
                max_restarts: int = DEFAULT_MAX_RESTARTS, restart_window: float = RESTART_WINDOW_SECONDS,
                initializer: Callable[[], None] | None = None) -> None:
    """Runs ``count`` worker processes sharing ``host:port`` (and ``grpc_port``) until SIGTERM or
    Ctrl-C, then forwards SIGTERM, waits for every worker's drain and returns.

    Args:
        target: picklable (a module-level function, or a ``functools.partial`` of one), called
            in each worker as ``target(port=int, grpc_port=int | None, report=callable)``: it
            serves in the foreground with ``SO_REUSEPORT``, calls ``report(Report)`` once it
            listens, and returns after its drain.
        count: int >= 1. Worker processes.
        host: str. The address the workers bind.
        port: int. The REST port; 0 picks a free one, shared by all.
        grpc_port: int | None. The gRPC port (0: a free one, shared), None for REST alone.
        on_ready: called once with every worker's report, the REST port and the gRPC port,
            when all workers first listen (e.g. to print the banner).
        max_restarts: int. Unexpected worker exits restarted within ``restart_window`` seconds;
            one more stops the server.
        initializer: picklable, called first in each worker, before ``target`` is unpickled (and
            its module imported): e.g. the command line's logging set-up and quiet TensorFlow start.

    Raises:
        UserError: a worker's, when one failed to start on a user's mistake.
        WorkerFailed: a worker failed to start, exited non-zero while draining, or kept dying.
        OSError: a port is taken by another program.
    """
    reserved = [reserve_port(host, port)]
    try:
        port = reserved[0].getsockname()[1]
        if grpc_port is not None:
            family = socket.getaddrinfo(host.strip("[]"), grpc_port, type=socket.SOCK_STREAM)[0][0]
            reserved.append(reserve_port(host, grpc_port, family))
            grpc_port = reserved[1].getsockname()[1]
        pool = _Pool(target, count, port, grpc_port, max_restarts, restart_window, initializer)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, lambda *_: pool.terminate()) if main_thread else None
        try:
            with _shared_metrics_dir() as metrics_dir:
                pool.metrics_dir = metrics_dir
                _supervise(pool, on_ready)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    finally:
        for sock in reserved:
            sock.close()


class _shared_metrics_dir:
    """Sets ``PROMETHEUS_MULTIPROC_DIR`` while the workers run (spawned processes take this
    process's environment when they start, before they import anything): the user's directory if
    it is set already, else a new temporary one, removed on exit."""

    def __enter__(self) -> str:
        from serving.metrics import MULTIPROCESS_DIR_ENV, multiprocess_dir  # prometheus-client, not TensorFlow

        self.env, self.given = MULTIPROCESS_DIR_ENV, multiprocess_dir()
        self.path = self.given or tempfile.mkdtemp(prefix="mmoe-serving-metrics-")
        os.environ[self.env] = self.path
        return self.path

    def __exit__(self, *exc) -> None:
        if self.given is None:
            os.environ.pop(self.env, None)
            shutil.rmtree(self.path, ignore_errors=True)


def _supervise(pool: _Pool, on_ready: Callable[[Sequence[Report], int, int | None], None]) -> None:
    for slot in range(pool.count):
        pool.start(slot)
    came_up = False
    failure: BaseException | None = None
    # every process not yet joined is waited on, exited or not: one that died between two waits
    # (so no longer "live") must still be seen here, to be restarted or to fail the server
    while any(p is not None for p in pool.processes) or any(pipe is not None for pipe in pool.pipes):
        try:
            waiting = [p.sentinel for p in pool.processes if p is not None] + [
                pipe for pipe in pool.pipes if pipe is not None]
            ready = multiprocessing.connection.wait(waiting)
        except KeyboardInterrupt:
            log.info("interrupted: stopping %d worker(s)", len(pool.live()))
            pool.terminate()
            continue
        for slot, pipe in enumerate(pool.pipes):
            if pipe is not None and pipe in ready:
                try:
                    report = pipe.recv()
                except EOFError:  # the worker exited: its sentinel says how
                    pipe.close()
                    pool.pipes[slot] = None
                    continue
                if "user_error" in report and failure is None:
                    failure = UserError(report["user_error"])
                    failure.exit_code = report["exit_code"]  # the worker's own error's status
                elif "error" in report and failure is None:
                    failure = WorkerFailed(f"worker {report['pid']} failed: {report['error']}")
                else:
                    pool.reports[slot] = report
                    if not came_up and all(pool.reports):
                        came_up = True
                        on_ready(list(pool.reports), pool.port, pool.grpc_port)
                    elif came_up:
                        log.warning("worker %d (pid %d) is serving again", slot, report["pid"])
        for slot, process in enumerate(pool.processes):
            if process is None or process.sentinel not in ready or process.exitcode is None:
                continue
            process.join()
            pool.processes[slot] = None
            _forget_live_gauges(pool.metrics_dir, process.pid)
            if pool.pipes[slot] is not None:  # its last report, if any, before it is dropped
                _drain_pipe(pool, slot)
            code = process.exitcode
            if pool.stopping:
                if code != 0 and failure is None:
                    failure = WorkerFailed(f"worker {slot} (pid {process.pid}) exited with code {code} while draining")
                continue
            if failure is None and came_up and pool.may_restart():
                log.warning("worker %d (pid %d) exited with code %s; restarting it (%d of %d restarts within %.0f s)",
                            slot, process.pid, code, len(pool.restarts), pool.max_restarts, pool.restart_window)
                pool.start(slot)
                continue
            if failure is None:
                failure = WorkerFailed(
                    f"worker {slot} (pid {process.pid}) exited with code {code} "
                    + ("before the server came up" if not came_up
                       else f"after {pool.max_restarts} restarts within {pool.restart_window:.0f} s; giving up"))
            log.error("%s; stopping the other workers", failure)
            pool.terminate()
    if failure is not None:
        raise failure


def _forget_live_gauges(metrics_dir: str | None, pid: int) -> None:
    """Drops a dead worker's ``live*`` gauge files (its counters stay: counts never go down)."""
    if metrics_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, metrics_dir)


def _drain_pipe(pool: _Pool, slot: int) -> None:
    pipe = pool.pipes[slot]
    pool.pipes[slot] = None
    try:
        while pipe.poll():
            report = pipe.recv()
            if "user_error" in report or "error" in report:
                log.error("worker %d: %s", slot, report.get("user_error") or report.get("error"))
    except EOFError:
        pass
    finally:
        pipe.close()

