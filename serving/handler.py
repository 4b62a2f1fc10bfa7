"""HTTP for the REST API: reads a request's body, answers JSON, turns every error into a status.

:class:`RequestHandler` is the ``http.server`` handler of :class:`serving.server.ModelServer`: it
reads the body (``Content-Length`` only, one value, within the server's limit), hands method, path
and body to :func:`serving.routes.dispatch`, and writes the answer in one send, always with a
status line and headers (also for a request line ``http.server`` could not parse: 400, or 505
for HTTP/2 and later). Every method reaches the routes, which answer those they do not serve 405
with ``Allow``. A :class:`~serving.errors.RequestError` becomes its status, headers and
``{"error": message}``; a model that rejects its input 400 (with TensorFlow's reason, not its
"Graph execution error" heading), an unloaded version 503, anything else 500.
"""

from __future__ import annotations

import http.server
import logging
import re
from typing import TYPE_CHECKING, Callable, Mapping

import tensorflow as tf

from serving.batching import VersionUnloaded
from serving.errors import RequestError
from serving.responses import to_json_bytes
from serving.routes import dispatch

if TYPE_CHECKING:
    from serving.server import ModelServer

log = logging.getLogger(__name__)

DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # oversized bodies up to this size are read and dropped
_DIGITS = re.compile(r"[0-9]+")  # RFC 9110's Content-Length = 1*DIGIT (int() also takes "+5", "1_0")
# lines of a TensorFlow error message that say where it happened, not what is wrong
_TF_BOILERPLATE = ("Graph execution error:", "Detected at node", "<stack traces unavailable>", "[[")


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """Answers one HTTP request, routed by :func:`serving.routes.dispatch`; every error becomes
    JSON ``{"error": ...}``."""

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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON errors for the failures ``http.server`` detects itself (bad request line, HTTP/2,
        header lines too long), with a status line even when the request line did not parse."""
        self.close_connection = True
        self._send_json(code, {"error": message or explain or http.HTTPStatus(code).phrase})

    def _send_json(self, status: int, body: dict | bytes, headers: Mapping[str, str] | None = None) -> None:
        """Answers ``body`` (a dict, or JSON already encoded) and ``headers`` in one write."""
        payload = body if isinstance(body, bytes) else to_json_bytes(body)
        self.log_request(status)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (f"{self.protocol_version} {status} {_phrase(status)}\r\n"
                f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}"
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
        headers = None
        try:
            body = self._read_body()
            status, response = dispatch(self.server, self.command, self.path, body)
        except RequestError as error:
            status, response, headers = error.status, {"error": str(error)}, error.headers
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client stalled or left mid-request: nobody to answer
            return
        except VersionUnloaded as error:
            status, response = 503, {"error": str(error)}
        except tf.errors.InvalidArgumentError as error:  # an input the checks before the call let through
            status, response = 400, {"error": f"the model rejected the input: {model_error_reason(error.message)}"}
        except Exception as error:  # noqa: BLE001 - a bug must answer 500, not kill the thread
            log.exception("internal error on %s %s", self.command, self.path)
            status, response = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        self._send_json(status, response, headers)

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

