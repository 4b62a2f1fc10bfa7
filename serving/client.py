"""A small client for the REST server (standard library only: urllib + json).

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
import json
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence


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
    """Talks to one model on a server.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8501``.
        model: model name.
        timeout: seconds per request. Defaults to 30.
    """

    def __init__(self, url: str, model: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout

    def _model_path(self, version: int | None) -> str:
        path = f"{self.url}/v1/models/{self.model}"
        return path if version is None else f"{path}/versions/{int(version)}"

    def _request(self, url: str, body: Mapping | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                message = json.loads(payload).get("error", payload.decode(errors="replace"))
            except (ValueError, AttributeError):
                message = payload.decode(errors="replace")
            raise ServingError(error.code, message) from None

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
            self._request(f"{self.url}/readyz")
            return True
        except (ServingError, urllib.error.URLError):
            return False
