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

Load is bounded, never queued without limit: :class:`InFlight` refuses a request past the server's
concurrency limit, and a batcher refuses one that would take its queue past
``max_enqueued_batches`` batches of ``max_size`` rows (TF Serving's ``max_enqueued_batches``), both
with :class:`Overloaded`; once the server drains, :class:`InFlight` refuses new requests with
:class:`ShuttingDown`. These and :class:`VersionUnloaded` are :class:`Unavailable`: plain
exceptions that REST answers 503 with ``Retry-After`` and gRPC maps to ``UNAVAILABLE`` (or
``RESOURCE_EXHAUSTED`` for :class:`Overloaded`).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Arrays = dict[str, np.ndarray]


DEFAULT_MAX_ENQUEUED_BATCHES = 10  # a batcher's queue bound, in full batches (TensorFlow's batching default)
DEFAULT_RETRY_AFTER_SECONDS = 1  # what an overloaded or draining server asks clients to wait
DEFAULT_MAX_CONCURRENT_REQUESTS = 256  # the server's InFlight limit: more model requests are answered 503
DEFAULT_DRAIN_SECONDS = 10.0  # how long a draining server waits for the requests in progress
# (here, not in serving.server, so that the CLI's flags can name them without importing TensorFlow)


class Unavailable(RuntimeError):
    """The request was not run and may be retried later (REST 503, gRPC ``UNAVAILABLE``).

    Args:
        message: str. Why, and what to do.
        retry_after: int. Seconds the client should wait before retrying (``Retry-After``).
    """

    reason = "unavailable"  # why, as the metrics count refusals

    def __init__(self, message: str, retry_after: int = DEFAULT_RETRY_AFTER_SECONDS):
        super().__init__(message)
        self.retry_after = retry_after


class VersionUnloaded(Unavailable):
    """The batcher was closed because its model version was unloaded; the request may be retried."""

    reason = "version_unloaded"

    def __init__(self, message: str):
        super().__init__(message, retry_after=0)


class Overloaded(Unavailable):
    """The server is at a limit (gRPC ``RESOURCE_EXHAUSTED``): the request was shed, not queued.

    Args:
        message: str. Which limit, and its value.
        reason: str. ``"concurrency"`` (too many requests in progress) or ``"queue"`` (a batcher's
            queue is full); the metrics count refusals by it.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class ShuttingDown(Unavailable):
    """The server is draining before it exits: it takes no new requests."""

    reason = "shutting_down"


class InFlight:
    """The server's requests in progress, their limit, and whether it still takes new ones.

    Use it as a context manager around each request; entering refuses the request when the server
    drains or is at ``limit``. Calling it gives the count (what :class:`Batcher` reads). The batchers
    given it as ``in_flight`` also take their queue bound and batch observer from it.

    Args:
        limit: int or None. Most requests in progress at once; None for no limit.
        max_enqueued_batches: int. Each batcher's queue bound, in batches of its ``max_size`` rows.
        on_batch: called with the number of rows of every batched model call (the metrics' batch
            size histogram), or None.
    """

    def __init__(self, limit: int | None = None, max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES,
                 on_batch: Callable[[int], None] | None = None):
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        if max_enqueued_batches < 1:
            raise ValueError(f"max_enqueued_batches must be >= 1, got {max_enqueued_batches}")
        self.limit = limit
        self.max_enqueued_batches = max_enqueued_batches
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._count = 0
        self._draining = False

    def __enter__(self) -> "InFlight":
        with self._cond:
            if self._draining:
                raise ShuttingDown("the server is shutting down and takes no new requests; retry on another replica")
            if self.limit is not None and self._count >= self.limit:
                raise Overloaded(f"the server is at its limit of {self.limit} requests in progress; retry later",
                                 "concurrency")
            self._count += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._count -= 1
            if not self._count:
                self._cond.notify_all()

    def __call__(self) -> int:
        return self._count

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: new requests are refused."""
        return self._draining

    def drain(self) -> None:
        """Refuses every request from now on; those in progress go on."""
        with self._cond:
            self._draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the requests in progress to finish; whether they did."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout)


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
            worker waits only while some of them are not yet in the batch. An :class:`InFlight`
            also gives the defaults of ``max_enqueued_batches`` and ``on_batch``.
        max_enqueued_batches: int or None. The queue holds at most this many times ``max_size``
            rows; a request that would take it past that (unless the queue is empty) is refused
            with :class:`Overloaded`. None: ``in_flight``'s, else
            :data:`DEFAULT_MAX_ENQUEUED_BATCHES`.
        on_batch: called with the number of rows of every model call, or None: ``in_flight``'s.
    """

    def __init__(self, run: Callable[[Arrays], Arrays], max_size: int = 4096, timeout_ms: float = 2.0,
                 name: str = "batcher", in_flight: Callable[[], int] | None = None,
                 max_enqueued_batches: int | None = None, on_batch: Callable[[int], None] | None = None):
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        server = in_flight if isinstance(in_flight, InFlight) else None
        if max_enqueued_batches is None:
            max_enqueued_batches = server.max_enqueued_batches if server else DEFAULT_MAX_ENQUEUED_BATCHES
        if max_enqueued_batches < 1:
            raise ValueError(f"max_enqueued_batches must be >= 1, got {max_enqueued_batches}")
        self._run = run
        self.max_size = max_size
        self.timeout = timeout_ms / 1000.0
        self.max_queued_rows = max_enqueued_batches * max_size
        self._in_flight = in_flight
        self._server = server
        self._on_batch = on_batch
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._running = False  # a model call is in progress (worker or inline)
        self.calls = 0  # model calls made, for tests and benchmarks
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        """Rows waiting in the queue now (the metrics' queue depth)."""
        return self._queued_rows

    def submit(self, inputs: Arrays) -> Arrays:
        """Runs ``inputs`` as part of a batch and returns this request's rows of the outputs.

        Raises:
            VersionUnloaded: if the batcher was closed (its model version was unloaded).
            Overloaded: if the queue has no room for this request's rows.
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
                if self._queue and self._queued_rows + request.rows > self.max_queued_rows:
                    raise Overloaded(f"the batching queue is full ({self._queued_rows} rows waiting, at most "
                                     f"{self.max_queued_rows}); retry later", "queue")
                self._queue.append(request)
                self._queued_rows += request.rows
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
            self._queued_rows -= rows
            deadline = time.monotonic() + self.timeout
            while rows < self.max_size:
                if self._queue:
                    if rows + self._queue[0].rows > self.max_size:
                        break
                    request = self._queue.popleft()
                    batch.append(request)
                    rows += request.rows
                    self._queued_rows -= request.rows
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
        on_batch = self._on_batch or (self._server.on_batch if self._server else None)
        if on_batch is not None:
            on_batch(total)
        for name, value in outputs.items():
            if np.ndim(value) == 0 or value.shape[0] != total:
                raise ValueError(f"output {name!r} has shape {np.shape(value)}, expected {total} rows first")
        offset = 0
        for request in batch:
            request.result = {name: value[offset:offset + request.rows] for name, value in outputs.items()}
            offset += request.rows
