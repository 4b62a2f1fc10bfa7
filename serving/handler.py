"""HTTP for the REST API: reads a request's body, answers JSON, turns every error into a status.

:class:`RequestHandler` is the ``http.server`` handler of :class:`serving.server.ModelServer`: it
reads the body (``Content-Length`` only, one value, within the server's limit), hands method, path
and body to :func:`serving.routes.resolve` and :func:`serving.routes.run`, and writes the answer
in one send, always with a status line and headers (also for a request line ``http.server`` could
not parse: 400, or 505 for HTTP/2 and later). Every method reaches the routes, which answer those
they do not serve 405 with ``Allow``. A :class:`~serving.errors.RequestError` becomes its status,
headers and ``{"error": message}``; a model that rejects its input 400 (with TensorFlow's reason,
not its "Graph execution error" heading); a request refused without running
(:class:`~serving.batching.Unavailable`: overload, shutdown, an unloaded version) 503 with
``Retry-After``; anything else 500. Every answer is counted in the server's metrics.

Between two requests of a keep-alive connection the handler waits for the next one or for the
server to drain: a connection idle when draining starts gets :data:`SHUTDOWN_IDLE_GRACE_SECONDS`
for a request already on its way, then is closed; every answer written while draining says
``Connection: close``.
"""

from __future__ import annotations

import http.server
import logging
import re
import select
import time
from typing import TYPE_CHECKING, Callable, Mapping

import tensorflow as tf

from serving.batching import Unavailable
from serving.errors import RequestError
from serving.metrics import UNROUTED
from serving.responses import to_json_bytes
from serving.routes import Call, Route, resolve, run

if TYPE_CHECKING:
    from serving.server import ModelServer

log = logging.getLogger(__name__)

DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # oversized bodies up to this size are read and dropped
SHUTDOWN_IDLE_GRACE_SECONDS = 0.25  # a draining server still answers a request this late on an idle connection
JSON = "application/json"
_DIGITS = re.compile(r"[0-9]+")  # RFC 9110's Content-Length = 1*DIGIT (int() also takes "+5", "1_0")
# lines of a TensorFlow error message that say where it happened, not what is wrong
_TF_BOILERPLATE = ("Graph execution error:", "Detected at node", "<stack traces unavailable>", "[[")


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """Answers the HTTP requests of one connection, routed by :mod:`serving.routes`; every error
    becomes JSON ``{"error": ...}``."""

    protocol_version = "HTTP/1.1"
    server_version = "mmoe-serving"
    disable_nagle_algorithm = True
    timeout = 120  # seconds a keep-alive connection may sit idle or stall mid-request
    server: ModelServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def __getattr__(self, name: str) -> Callable[[], None]:
        """``do_<METHOD>`` for any method token, so that every method reaches the routes (which
        answer 405 with ``Allow``) instead of ``http.server``'s 501."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def handle(self) -> None:
        """Answers the connection's requests until it closes, the client's idle timeout passes,
        or the server drains (:meth:`_next_request_comes`)."""
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self._next_request_comes():
            self.handle_one_request()

    def _next_request_comes(self) -> bool:
        """Waits for the next request's first bytes: False after :attr:`timeout` idle seconds, or
        :data:`SHUTDOWN_IDLE_GRACE_SECONDS` after the server began to drain."""
        try:
            self.connection.setblocking(False)  # bytes already read ahead (a pipelined request) count
            try:
                if self.rfile.peek(1):
                    return True
            finally:
                self.connection.settimeout(self.timeout)
        except OSError:
            return False
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        poller.register(self.server.drain_signal, select.POLLIN)
        ready = dict(poller.poll(self.timeout * 1000))
        if self.connection.fileno() in ready:
            return True
        if self.server.drain_signal not in ready:
            return False  # idle past the timeout
        poller.unregister(self.server.drain_signal)
        return bool(poller.poll(SHUTDOWN_IDLE_GRACE_SECONDS * 1000))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON errors for the failures ``http.server`` detects itself (bad request line, HTTP/2,
        header lines too long), with a status line even when the request line did not parse."""
        self.close_connection = True
        self.server.metrics.observe_request(UNROUTED, "", "", code, 0.0)
        self._send(code, {"error": message or explain or http.HTTPStatus(code).phrase})

    def _send(self, status: int, body: dict | bytes, headers: Mapping[str, str] | None = None,
              content_type: str = JSON) -> None:
        """Answers ``body`` (a dict, or bytes of ``content_type``) and ``headers`` in one write;
        closes the connection after it when the server drains."""
        payload = body if isinstance(body, bytes) else to_json_bytes(body)
        self.log_request(status)
        if self.server.draining:
            self.close_connection = True
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (f"{self.protocol_version} {status} {_phrase(status)}\r\n"
                f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n{extra}"
                + ("Connection: close\r\n" if self.close_connection else "") + "\r\n")
        try:
            # one send: headers and body leave in one segment (TCP_NODELAY is set on the socket)
            self.wfile.write(head.encode("latin-1") + (b"" if self.command == "HEAD" else payload))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _content_length(self) -> int | None:
        """The body's size from ``Content-Length`` (None without one).

        Raises:
            RequestError: 400 (closing the connection, whose framing is then unknown) for a value
                that is not digits or for several different values.
        """
        given = self.headers.get_all("Content-Length")
        if not given:
            return None
        values = {value.strip() for header in given for value in header.split(",")}
        if len(values) > 1:
            self.close_connection = True
            raise RequestError(f"conflicting Content-Length headers {sorted(values)}; send one")
        (length,) = values
        if not _DIGITS.fullmatch(length):
            self.close_connection = True
            raise RequestError(f"invalid Content-Length {length[:40]!r}; expected a number of bytes")
        return int(length)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise RequestError("chunked request bodies are not supported; send Content-Length", 411)
        size = self._content_length()
        if size is None:
            if self.command == "POST":
                raise RequestError("a POST needs a Content-Length header", 411)
            return b""
        limit = self.server.config.max_body_bytes
        if size > limit:
            self._discard(size)
            raise RequestError(f"request body of {size} bytes is larger than the limit of {limit} bytes", 413)
        return self.rfile.read(size)

    def _discard(self, size: int) -> None:
        """Reads and drops an oversized body so the client sees the 413, not a reset connection."""
        if size > DRAIN_LIMIT_BYTES:
            self.close_connection = True  # too much to read: the unread body ends the connection
            return
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 20))
            if not chunk:
                self.close_connection = True
                return
            size -= len(chunk)

    def _handle(self) -> None:
        started = time.perf_counter()
        route: Route | None = None
        call: Call | None = None
        headers, content_type = None, JSON
        try:
            body = self._read_body()
            route, call = resolve(self.server, self.command, self.path, body)
            status, response = run(route, call, self.command)
            content_type = route.content_type if status < 400 else JSON
        except RequestError as error:
            status, response, headers = error.status, {"error": str(error)}, error.headers
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client stalled or left mid-request: nobody to answer
            return
        except Unavailable as error:  # refused without running: overload, shutdown, an unloaded version
            status, response, headers = 503, {"error": str(error)}, {"Retry-After": str(error.retry_after)}
            self.server.metrics.observe_rejection(route.name if route else UNROUTED, error.reason)
        except tf.errors.InvalidArgumentError as error:  # an input the checks before the call let through
            status, response = 400, {"error": f"the model rejected the input: {model_error_reason(error.message)}"}
        except Exception as error:  # noqa: BLE001 - a bug must answer 500, not kill the thread
            log.exception("internal error on %s %s", self.command, self.path)
            status, response = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        served = call.served if call is not None else None
        # counted before it is written: a client that read its answer finds it in the next scrape
        self.server.metrics.observe_request(route.name if route else UNROUTED, call.model if call else "",
                                            str(served.version) if served is not None else "", status,
                                            time.perf_counter() - started)
        self._send(status, response, headers, content_type)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def model_error_reason(message: str) -> str:
    """What a TensorFlow op error says is wrong, without the heading and node lines around it.

    Args:
        message: str. ``tf.errors.OpError.message``, e.g. ``"Graph execution error:\\n\\nDetected at
            node ...\\nName: <unknown>, Key: user_age, Index: 0.  Data types don't match. ..."``.

    Returns:
        The first line that is neither heading nor location (``"Key: user_age, Index: 0.  Data
        types don't match. ..."``), cut to 300 characters; the first line if all are.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(_TF_BOILERPLATE)] or lines[:1] or ["(no message)"]
    reason = reasons[0].removeprefix("Name: <unknown>, ")
    return reason if len(reason) <= 300 else reason[:297] + "..."


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""

