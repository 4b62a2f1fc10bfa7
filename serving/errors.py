"""Client mistakes: :class:`RequestError` and how offending values are named in its message.

Every client mistake raises :class:`RequestError` with an HTTP status and a message that names the
problem (the field, the feature, the index); the handler (:mod:`serving.handler`) answers it as
``{"error": message}``.
"""

from __future__ import annotations

import json
from typing import Any


class RequestError(Exception):
    """A client mistake: ``status`` is the HTTP status (4xx), the message says what is wrong."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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
