"""HTTP for the REST API: reads a request's body, answers JSON, turns every error into a status.

:class:`RequestHandler` is the ``http.server`` handler of :class:`serving.server.ModelServer`: it
reads the body (``Content-Length`` only, within the server's limit), hands method, path and body
to :func:`serving.routes.dispatch`, and writes the answer in one send. A
:class:`~serving.errors.RequestError` becomes its status and ``{"error": message}``; a model that
rejects its input 400, an unloaded version 503, anything else 500.
"""

from __future__ import annotations

import http.server
import logging
from typing import TYPE_CHECKING

import tensorflow as tf

from serving.batching import VersionUnloaded
from serving.errors import RequestError
from serving.responses import to_json_bytes
from serving.routes import dispatch

if TYPE_CHECKING:
    from serving.server import ModelServer

log = logging.getLogger(__name__)

DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # oversized bodies up to this size are read and dropped


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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON errors for the failures ``http.server`` detects itself (bad request line, ...)."""
        self.close_connection = True
        self._send_json(code, {"error": message or explain or http.HTTPStatus(code).phrase})

    def _send_json(self, status: int, body: dict | bytes) -> None:
        """Answers ``body`` (a dict, or JSON already encoded) with its headers in one write."""
        payload = body if isinstance(body, bytes) else to_json_bytes(body)
        if self.request_version == "HTTP/0.9":  # no headers then (or the request line did not parse)
            self._send_unparsed(status, payload)
            return
        self.log_request(status)
        head = (f"{self.protocol_version} {status} {_phrase(status)}\r\n"
                f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                + ("Connection: close\r\n" if self.close_connection else "") + "\r\n")
        try:
            # one send: headers and body leave in one segment (TCP_NODELAY is set on the socket)
            self.wfile.write(head.encode("latin-1") + (b"" if self.command == "HEAD" else payload))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_unparsed(self, status: int, payload: bytes) -> None:
        """The answer through ``http.server``, which writes no headers for HTTP/0.9 requests and
        errors found before the request line was parsed."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise RequestError("chunked request bodies are not supported; send Content-Length", 411)
        length = self.headers.get("Content-Length")
        if length is None:
            if self.command == "POST":
                raise RequestError("a POST needs a Content-Length header", 411)
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(f"invalid Content-Length {length!r}") from None
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
        try:
            body = self._read_body()
            status, response = dispatch(self.server, self.command, self.path, body)
        except RequestError as error:
            status, response = error.status, {"error": str(error)}
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client stalled or left mid-request: nobody to answer
            return
        except VersionUnloaded as error:
            status, response = 503, {"error": str(error)}
        except tf.errors.InvalidArgumentError as error:  # e.g. a b64 string that is no tf.Example
            status, response = 400, {"error": f"the model rejected the input: {error.message.splitlines()[0]}"}
        except Exception as error:  # noqa: BLE001 - a bug must answer 500, not kill the thread
            log.exception("internal error on %s %s", self.command, self.path)
            status, response = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        self._send_json(status, response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""

