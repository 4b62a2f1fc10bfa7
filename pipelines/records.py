"""The elements that flow between the pipeline's stages.

A raw input row travels as a :class:`RawRecord` (where it came from, the row exactly as read, and
its values by column name); a row that fails a check travels as a :class:`Rejection` that still
carries the raw row unchanged. Valid rows are plain dicts ``{column name: typed value}``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
from typing import Any, Mapping, NamedTuple

from feature_specs.values import MISSING, NOT_FINITE, OUT_OF_RANGE, TOO_LONG, WRONG_TYPE

# Reject reasons, in the order the checks run (the value reasons come from feature_specs.values).
UNPARSEABLE_LINE = "unparseable_line"
UNKNOWN_COLUMN = "unknown_column"  # only with the spec's ``pipeline.unknown_columns: reject``
# Not a validation reason: the side-table join rejects a row whose key a table lacks (missing_key: reject).
MISSING_KEY = "missing_key"
REASONS = (UNPARSEABLE_LINE, UNKNOWN_COLUMN, MISSING, WRONG_TYPE, NOT_FINITE, OUT_OF_RANGE, TOO_LONG)


class RawRecord(NamedTuple):
    """One input row as read.

    Args:
        source: str. The file the row was read from.
        row: the row exactly as read: the line (str) for CSV and JSONL, the column -> value dict
            for Parquet and tf.Example (the serialized bytes where an Example does not parse).
        values: column name -> raw value, or None when the row could not be parsed.
        error: str. Why the row could not be parsed (only where ``values`` is None).
    """

    source: str
    row: Any
    values: Mapping[str, Any] | None
    error: str | None = None


class Rejection(NamedTuple):
    """A row that did not pass; written to ``rejected/`` as one JSON line.

    Args:
        source: str. The file the row was read from.
        row: the raw row, unchanged (line for CSV, dict for Parquet).
        reason: str. One of :data:`REASONS`.
        field: str or None. The column that failed (None for an unparseable line).
        message: str. A human explanation naming the field and the value.
    """

    source: str
    row: Any
    reason: str
    field: str | None
    message: str

    def to_json(self):
        """The JSON line ``{"source", "row", "reason", "field", "message"}`` (always valid JSON)."""
        return json.dumps(
            {"source": self.source, "row": json_safe(self.row), "reason": self.reason,
             "field": self.field, "message": self.message},
            allow_nan=False, ensure_ascii=False, sort_keys=False,
        )


def json_safe(value: Any) -> Any:
    """Converts a raw value into plain JSON data, keeping it as recognisable as possible.

    Non-finite floats become the strings ``"nan"``/``"inf"``/``"-inf"`` (JSON has no NaN), bytes
    become text when they are UTF-8 and ``{"base64": ...}`` otherwise, dates become ISO strings,
    anything else unknown becomes its ``repr``.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return repr(value)
