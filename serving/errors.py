"""Client mistakes: :class:`RequestError` and how offending values are named in its message.

Every client mistake raises :class:`RequestError` with an HTTP status and a message that names the
problem (the field, the feature, the index); the handler (:mod:`serving.handler`) answers it as
``{"error": message}``, with the error's ``headers`` (``Allow`` for :class:`MethodNotAllowed`).
"""

from __future__ import annotations

import json
from typing import Any, Sequence


class RequestError(Exception):
    """A client mistake: ``status`` is the HTTP status (4xx), the message says what is wrong.

    Args:
        message: str. What is wrong and where (field, feature, index).
        status: int. The HTTP status; 400 by default.
        headers: dict of str to str. Extra response headers; none by default.
    """

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class MethodNotAllowed(RequestError):
    """405 for a method the resource does not answer, with the ``Allow`` header RFC 9110 requires.

    Args:
        method: str. The request's method, as sent.
        allowed: the methods the resource answers, e.g. ``("GET", "HEAD")``.
    """

    def __init__(self, method: str, allowed: Sequence[str]):
        shown = method if len(method) <= 20 else method[:17] + "..."
        super().__init__(f"{shown} is not allowed here; use {' or '.join(allowed)}", 405,
                         {"Allow": ", ".join(allowed)})


def describe(value: Any) -> str:
    """``value`` as JSON for an error message, cut to 40 characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def type_name(value: Any) -> str:
    """The JSON type name of a decoded value (``null``, ``integer``, ``array``, ...)."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)
