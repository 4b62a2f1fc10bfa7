"""A small client for the REST server (standard library only: http.client + json).

Each thread keeps one persistent HTTP/1.1 connection to the server (keep-alive), so a request
costs no TCP handshake; a connection the server has closed meanwhile is reopened once.

Example::

    from serving.client import Client, b64

    client = Client("http://127.0.0.1:8501", "clicklog")
    client.status()                                      # {"model_version_status": [...]}
    client.predict(instances=[b64(serialized_example)])  # serving_default, row format
    client.rank({"user_id": "u1", "device": "ios", "hour": 9},
                [{"item_id": "i1", ...}, {"item_id": "i2", ...}], top_k=10)
"""

from __future__ import annotations

import base64
import http.client
import threading
import urllib.parse
from typing import Any, Mapping, Sequence

import orjson

# the server closed a kept-alive connection (idle timeout, restart): reopen it and send again
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class ServingError(Exception):
    """The server answered with an error: ``status`` is the HTTP status, the message its ``error``."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def b64(data: bytes) -> dict:
    """TF Serving's JSON form of a binary string (e.g. a serialized tf.Example)."""
    return {"b64": base64.b64encode(data).decode("ascii")}


class Client:
    """Talks to one model on a server; safe to share between threads (one connection each).

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8501`` (``https://`` works too).
        model: model name.
        timeout: seconds per request. Defaults to 30.
    """

    def __init__(self, url: str, model: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like http://host:port, got {url!r}")
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._netloc = parts.netloc
        self._prefix = parts.path
        self.model = model
        self.timeout = timeout
        self._local = threading.local()

    def _model_path(self, version: int | None) -> str:
        path = f"{self._prefix}/v1/models/{self.model}"
        return path if version is None else f"{path}/versions/{int(version)}"

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's kept-alive connection, opened on first use."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connection_class(self._netloc, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def close(self) -> None:
        """Closes this thread's connection (the next request opens a new one)."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _exchange(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        """``(status, body)`` of one request on this thread's connection, reopened once if stale."""
        try:
            return self._send(method, path, data)
        except STALE_CONNECTION:
            return self._send(method, path, data)  # on a new connection: rank and predict are pure

    def _send(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection = self._connection()
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except BaseException:
            self.close()  # a half-done exchange leaves the connection unusable
            raise

    def _request(self, path: str, body: Mapping | None = None) -> dict:
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        status, payload = self._exchange("GET" if body is None else "POST", path, data)
        if status < 400:
            return orjson.loads(payload)
        try:
            message = orjson.loads(payload).get("error", payload.decode(errors="replace"))
        except (ValueError, AttributeError):
            message = payload.decode(errors="replace")
        raise ServingError(status, message)

    def status(self, version: int | None = None) -> dict:
        """TF Serving's model status: ``{"model_version_status": [...]}``."""
        return self._request(self._model_path(version))

    def metadata(self, version: int | None = None) -> dict:
        """TF Serving's model metadata (signature_def of every signature)."""
        return self._request(self._model_path(version) + "/metadata")

    def predict(self, instances: Sequence | None = None, inputs: Any = None, signature_name: str | None = None,
                version: int | None = None) -> dict:
        """TF Serving predict: pass ``instances`` (row format) or ``inputs`` (columnar).

        Returns:
            ``{"predictions": [...]}`` for instances, ``{"outputs": {...}}`` for inputs.
        """
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances (row format) or inputs (columnar format)")
        body: dict = {"instances": list(instances)} if instances is not None else {"inputs": inputs}
        if signature_name is not None:
            body["signature_name"] = signature_name
        return self._request(self._model_path(version) + ":predict", body)

    def rank(self, context: Mapping, candidates: Sequence[Mapping], top_k: int | None = None,
             version: int | None = None) -> list[dict]:
        """Ranks ``candidates`` for one request; returns them best first.

        Args:
            context: features shared by every candidate (user, device, time), sent once.
            candidates: per-candidate features (item id, category, price, ...).
            top_k: return only the best ``top_k``.
            version: a specific version; defaults to the newest.

        Returns:
            ``[{"index": i, "score": ..., "<task output>": ..., ...}, ...]``, highest score first;
            ``index`` points into ``candidates``.
        """
        body: dict = {"context": dict(context), "candidates": [dict(c) for c in candidates]}
        if top_k is not None:
            body["top_k"] = top_k
        return self._request(self._model_path(version) + ":rank", body)["results"]

    def ready(self) -> bool:
        """Whether the server has a version loaded (``/readyz``)."""
        try:
            self._request(f"{self._prefix}/readyz")
            return True
        except (ServingError, OSError, http.client.HTTPException):
            return False
