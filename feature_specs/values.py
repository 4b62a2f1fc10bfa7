"""How a raw value becomes its column's type: the rules the pipeline's validation applies to every
row, and ``mmoe spec check`` to a sample before any pipeline starts. Plain Python: no Beam, no TF.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from feature_specs.spec import Column, ListSpec

# Reject reasons of values (the pipeline adds the reasons of whole rows).
MISSING = "missing"
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
OUT_OF_RANGE = "out_of_range"
TOO_LONG = "too_long"  # a list longer than its max_length, where the spec says reject


class InvalidValue(Exception):
    """A value that fails a check; carries the reject reason and a message naming the column."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_missing(value: Any) -> bool:
    """None, or text that is empty once stripped."""
    return value is None or (isinstance(value, str) and not value.strip())


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38  # tf.Example stores floats as float32
_EXACT_FLOAT_INT = 2**53  # integers above this are not exact in a float


def _to_int(name: str, value: Any, dtype: str) -> int:
    if isinstance(value, bool):
        raise InvalidValue(WRONG_TYPE, f"{name}: expected an integer, got the boolean {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, (float, str)):
        number = _parse_int(name, value)
    elif dtype == "timestamp" and isinstance(value, datetime.datetime):
        # Parquet timestamps: seconds since the epoch; naive ones are taken as UTC.
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        number = math.floor(moment.timestamp())
    else:
        raise InvalidValue(WRONG_TYPE, f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise InvalidValue(OUT_OF_RANGE, f"{name}={number} is outside the int64 range")
    return number


def _parse_int(name: str, value: float | str) -> int:
    """Integers, also written as integral floats ("35.0", as pandas writes int columns with gaps)."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidValue(WRONG_TYPE, f"{name}: {value!r} is not an integer") from None
    else:
        number = value
    if math.isfinite(number) and number.is_integer() and abs(number) <= _EXACT_FLOAT_INT:
        return int(number)
    raise InvalidValue(WRONG_TYPE, f"{name}: {value!r} is not an integer")


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidValue(WRONG_TYPE, f"{name}: expected a number, got the boolean {value!r}")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise InvalidValue(OUT_OF_RANGE, f"{name}={value} is outside the float32 range") from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidValue(WRONG_TYPE, f"{name}: {value!r} is not a number") from None
    else:
        raise InvalidValue(WRONG_TYPE, f"{name}: expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        raise InvalidValue(NOT_FINITE, f"{name}: {value!r} is not a finite number")
    if abs(number) > _FLOAT32_MAX:
        raise InvalidValue(OUT_OF_RANGE, f"{name}={value!r} is outside the float32 range")
    return number


def _to_str(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids read from Parquet: the same value a CSV would give
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue(WRONG_TYPE, f"{name}: {value!r} is not UTF-8 text") from None
    raise InvalidValue(WRONG_TYPE, f"{name}: expected a string, got {type(value).__name__} {value!r}")


def typed_value(column: Column, value: Any, log1p: bool = False) -> Any:
    """Converts one present raw value to its column's type and checks its range.

    Args:
        column: Column. The spec's column.
        value: the raw value (CSV text or a Parquet value), not missing.
        log1p: bool. The column goes through log1p downstream (a ``log1p`` feature or a label with
            ``label_transform: log1p``), so it must be > -1.

    Returns:
        str for string columns, int for int and timestamp columns, float for float columns, a
        list of elements for list columns (:func:`typed_list`).

    Raises:
        InvalidValue: with the reject reason and a message naming the column and the value.
    """
    name = column.name
    if column.list is not None:
        return typed_list(column, value)
    if column.dtype == "string":
        return _to_str(name, value)
    typed = _to_float(name, value) if column.dtype == "float" else _to_int(name, value, column.dtype)
    if column.min is not None and typed < column.min:
        raise InvalidValue(OUT_OF_RANGE, f"{name}={typed!r} is below the minimum {column.min:g}")
    if column.max is not None and typed > column.max:
        raise InvalidValue(OUT_OF_RANGE, f"{name}={typed!r} is above the maximum {column.max:g}")
    if log1p and typed <= -1:
        raise InvalidValue(OUT_OF_RANGE, f"{name}={typed!r} is not above -1, so log1p is undefined")
    return typed


def _list_elements(name: str, value: Any, separator: str) -> list:
    """The raw elements of one list value: text split at ``separator`` (each part stripped;
    blank text is the empty list) unless it is JSON array text (``["a", "b"]``), a JSON array /
    Parquet list as it is, a scalar as one element (a tf.Example feature holding one value
    reads as that value)."""
    if value is None:
        return []
    if isinstance(value, bytes):
        value = _to_str(name, value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("[") and text.endswith("]"):  # JSON array text (a CSV cell), as spec infer finds it
            try:
                parsed = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [part.strip() for part in value.split(separator)]
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (dict, set)):
        raise InvalidValue(WRONG_TYPE, f"{name}: expected a list, got {type(value).__name__} {value!r}"[:200])
    return [value]


def typed_list(column: Column, value: Any) -> list:
    """Converts one list value (see :class:`~feature_specs.spec.ListSpec`) to its typed elements.

    Args:
        column: Column with a ``list`` block; ``dtype`` is the elements' type.
        value: the raw value: text, a list, a scalar, or None (the empty list).

    Returns:
        list of str or int, at most ``column.list.max_length`` long (the first elements kept
        under ``too_long: truncate``).

    Raises:
        InvalidValue: ``wrong_type`` for an empty, null or mistyped element (naming its
            position), ``out_of_range`` for an element outside ``min``/``max`` or a negative
            int, ``too_long`` for a longer list under ``too_long: reject``.
    """
    shape: ListSpec = column.list
    name = column.name
    elements = _list_elements(name, value, shape.separator)
    if len(elements) > shape.max_length:
        if shape.too_long == "reject":
            raise InvalidValue(TOO_LONG, f"{name}: {len(elements)} elements, more than max_length "
                                         f"{shape.max_length} (list.too_long is reject)")
        elements = elements[:shape.max_length]
    element_column = Column(name=name, dtype=column.dtype, min=column.min, max=column.max)
    typed = []
    for index, element in enumerate(elements):
        if is_missing(element):
            what = "null" if element is None else "empty"
            raise InvalidValue(WRONG_TYPE, f"{name}[{index}]: list element is {what}")
        try:
            item = typed_value(element_column, element)
        except InvalidValue:  # typed again under the element's own name, which its message then names
            typed_value(Column(name=f"{name}[{index}]", dtype=column.dtype, min=column.min, max=column.max), element)
            raise
        if column.dtype == "string" and not item.strip():  # b"" from a tf.Example or a tensor
            raise InvalidValue(WRONG_TYPE, f"{name}[{index}]: list element is empty")
        if column.dtype == "int" and item < 0:
            raise InvalidValue(OUT_OF_RANGE, f"{name}[{index}]={item}: int list elements are >= 0 (-1 pads padded lists)")
        typed.append(item)
    return typed
