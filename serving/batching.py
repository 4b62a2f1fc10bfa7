"""Server-side batching: concurrent requests to one signature become one model call.

A :class:`Batcher` owns one worker thread. Requests (dicts of numpy arrays, rows first) queue up;
the worker takes the first, then keeps adding queued requests until the batch holds
``max_size`` rows or ``timeout_ms`` has passed since it started collecting, concatenates them,
calls the model once and hands each caller its slice of the outputs. Like TF Serving's batching,
a request is never split: one larger than ``max_size`` runs alone. If a batched call fails, the
batch is halved until each failing request stands alone, so one bad request among n costs about
2·log2(n) more calls, not n; the server checks inputs before they are queued
(:mod:`serving.input_checks`), so this is the rare case.

With an ``in_flight`` counter (requests the server is handling right now), the worker stops
waiting as soon as every in-flight request is in the batch, and a request that is the only one in
flight while the model is idle runs at once in its own thread: a lone client pays neither the
timeout nor a thread hand-off.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Arrays = dict[str, np.ndarray]


class VersionUnloaded(RuntimeError):
    """The batcher was closed because its model version was unloaded; the request may be retried."""


class InFlight:
    """A thread-safe count of requests in progress; use as a context manager around each one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0

    def __enter__(self) -> "InFlight":
        with self._lock:
            self._count += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._count -= 1

    def __call__(self) -> int:
        return self._count


@dataclass
class _Request:
    inputs: Arrays
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Arrays | None = None
    error: BaseException | None = None


def num_rows(inputs: Arrays) -> int:
    """The common leading dimension of ``inputs``.

    Raises:
        ValueError: if the inputs disagree on it (or there are none).
    """
    sizes = {name: value.shape[0] if value.ndim else None for name, value in inputs.items()}
    distinct = set(sizes.values())
    if len(distinct) != 1 or None in distinct:
        raise ValueError(f"inputs must share their first (batch) dimension, got sizes {sizes}")
    return distinct.pop()


class Batcher:
    """Batches concurrent calls of ``run`` (a function of a dict of arrays, rows first).

    Args:
        run: called with the concatenated inputs; returns a dict of arrays whose first dimension
            is the total number of rows.
        max_size: int. Most rows per call (a single larger request runs alone).
        timeout_ms: float. Longest wait for more requests once the first one is taken.
        name: str. Worker thread name.
        in_flight: optional callable giving the number of requests the server is handling; the
            worker waits only while some of them are not yet in the batch.
    """

    def __init__(self, run: Callable[[Arrays], Arrays], max_size: int = 4096, timeout_ms: float = 2.0,
                 name: str = "batcher", in_flight: Callable[[], int] | None = None):
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        self._run = run
        self.max_size = max_size
        self.timeout = timeout_ms / 1000.0
        self._in_flight = in_flight
        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = False  # a model call is in progress (worker or inline)
        self.calls = 0  # model calls made, for tests and benchmarks
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, inputs: Arrays) -> Arrays:
        """Runs ``inputs`` as part of a batch and returns this request's rows of the outputs.

        Raises:
            VersionUnloaded: if the batcher was closed (its model version was unloaded).
            Exception: whatever ``run`` raised for this request.
        """
        request = _Request(inputs, num_rows(inputs))
        with self._cond:
            if self._closed:
                raise VersionUnloaded("this model version was unloaded while the request waited; retry it")
            # alone and idle: run in the caller's thread, sparing the hand-off to the worker
            inline = not self._queue and not self._running and self._in_flight is not None and self._in_flight() <= 1
            if inline:
                self._running = True
            else:
                self._queue.append(request)
                self._cond.notify()
        if inline:
            try:
                self._execute([request])
            finally:
                with self._cond:
                    self._running = False
                    if self._queue:  # wake the worker only if requests came meanwhile: a wakeup costs
                        self._cond.notify()  # a context switch and a GIL hand-off on every request
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def close(self) -> None:
        """Finishes the queued requests, then stops the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # -- worker ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._running = False

    def _others_coming(self, collected: int) -> bool:
        return self._in_flight is None or self._in_flight() > collected

    def _collect(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue or self._running:
                if self._closed and not self._queue:
                    return None
                self._cond.wait()
            self._running = True
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            deadline = time.monotonic() + self.timeout
            while rows < self.max_size:
                if self._queue:
                    if rows + self._queue[0].rows > self.max_size:
                        break
                    request = self._queue.popleft()
                    batch.append(request)
                    rows += request.rows
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed or not self._others_coming(len(batch)):
                    break
                self._cond.wait(remaining)
            return batch

    def _execute(self, batch: list[_Request]) -> None:
        try:
            self._isolate(batch)
        finally:
            for request in batch:
                request.done.set()

    def _isolate(self, batch: list[_Request]) -> None:
        """Runs ``batch`` in one call; if that fails, each half on its own, down to the requests
        that fail alone, which get their error: one bad request must not fail the others."""
        try:
            self._call(batch)
        except Exception as error:  # noqa: BLE001 - reported to the callers, never kills the worker
            if len(batch) == 1:
                batch[0].error = error
                return
            middle = len(batch) // 2
            self._isolate(batch[:middle])
            self._isolate(batch[middle:])

    def _call(self, batch: list[_Request]) -> None:
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
        outputs = self._run(inputs)
        self.calls += 1
        total = sum(r.rows for r in batch)
        for name, value in outputs.items():
            if np.ndim(value) == 0 or value.shape[0] != total:
                raise ValueError(f"output {name!r} has shape {np.shape(value)}, expected {total} rows first")
        offset = 0
        for request in batch:
            request.result = {name: value[offset:offset + request.rows] for name, value in outputs.items()}
            offset += request.rows
