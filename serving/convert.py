"""JSON values to numpy arrays, checked against a signature input's dtype and shape.

:func:`tensor_from_json` converts one (possibly nested) JSON value; :func:`converter` and
:func:`fast_converter` convert scalars one at a time (naming a bad one) or a flat list at once.
Strings are UTF-8 text or ``{"b64": "..."}`` for binary data, as in TF Serving's REST API.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from serving.errors import RequestError, describe, type_name

INT_RANGES = {
    tf.int8: (-(2**7), 2**7 - 1), tf.int16: (-(2**15), 2**15 - 1), tf.int32: (-(2**31), 2**31 - 1),
    tf.int64: (-(2**63), 2**63 - 1), tf.uint8: (0, 2**8 - 1), tf.uint16: (0, 2**16 - 1),
    tf.uint32: (0, 2**32 - 1), tf.uint64: (0, 2**64 - 1),
}
MAX_JSON_DEPTH = 64


@functools.lru_cache(maxsize=None)
def converter(dtype: tf.DType) -> Callable[[Any, str], Any]:
    """A fast checker/converter of JSON scalars for ``dtype``: ``convert(value, where)``.

    Built once per dtype, so validating many candidates costs a few ``isinstance`` checks each.
    """
    if dtype == tf.string:
        return _to_bytes
    if dtype == tf.bool:
        return _to_bool
    if dtype.is_integer and dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        return functools.partial(_to_int, low=low, high=high, name=dtype.name)
    if dtype.is_floating:
        return functools.partial(_to_float, limit=float(np.finfo(dtype.as_numpy_dtype).max), name=dtype.name)
    return functools.partial(_unsupported, name=dtype.name)


@functools.lru_cache(maxsize=None)
def fast_converter(dtype: tf.DType) -> Callable[[Sequence], np.ndarray | None]:
    """A vectorized converter of a flat list (or tuple) of JSON scalars for ``dtype``.

    ``convert(values)`` returns the 1-D array when every value is valid and of the plain type
    (checked once per list with C-level ``set(map(type, ...))`` and numpy range checks), else
    None: the caller then falls back to :func:`converter`, value by value, which names the bad
    field and row. So the fast path changes speed, never which requests are accepted.
    """
    if dtype == tf.string:
        return _fast_bytes
    if dtype == tf.bool:
        return _fast_bools
    if dtype.is_integer and dtype in INT_RANGES and dtype != tf.uint64:
        low, high = INT_RANGES[dtype]
        return functools.partial(_fast_ints, low=low, high=high, dtype=dtype.as_numpy_dtype)
    if dtype.is_floating:
        limit = float(np.finfo(dtype.as_numpy_dtype).max)
        return functools.partial(_fast_floats, limit=limit, dtype=dtype.as_numpy_dtype)
    return _no_fast_path


def _types(values: Sequence) -> set[type]:
    return set(map(type, values))


def _fast_bytes(values: Sequence) -> np.ndarray | None:
    if _types(values) != {str}:
        return None
    try:
        encoded = list(map(str.encode, values))  # UTF-8, strict
    except UnicodeEncodeError:
        return None
    array = np.empty(len(encoded), dtype=object)
    array[:] = encoded
    return array


def _fast_bools(values: Sequence) -> np.ndarray | None:
    return np.array(values, dtype=bool) if _types(values) == {bool} else None


def _fast_ints(values: Sequence, low: int, high: int, dtype: type) -> np.ndarray | None:
    if _types(values) != {int}:  # floats such as 3.0 take the slow path, which accepts them
        return None
    try:
        array = np.array(values, dtype=np.int64)
    except OverflowError:
        return None
    if array.min() < low or array.max() > high:
        return None
    return array.astype(dtype, copy=False)


def _fast_floats(values: Sequence, limit: float, dtype: type) -> np.ndarray | None:
    if not _types(values) <= {int, float}:  # bool is its own type here: rejected by the slow path
        return None
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:  # an int beyond float64
        return None
    if not np.all(np.abs(array) <= limit):  # also false for nan and inf
        return None
    return array.astype(dtype, copy=False)


def _no_fast_path(values: Sequence) -> None:
    return None


def _wrong(value: Any, expected: str, where: str) -> RequestError:
    return RequestError(f"{where}: expected {expected}, got {type_name(value)} {describe(value)}")


def _to_bytes(value: Any, where: str) -> bytes:
    if type(value) is str:  # orjson rejected lone surrogates already, so this always encodes
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"{where}: invalid base64 in {{\"b64\": ...}}") from None
    raise _wrong(value, 'a string or {"b64": "..."}', where)


def _to_bool(value: Any, where: str) -> bool:
    if type(value) is bool:
        return value
    raise _wrong(value, "a boolean", where)


def _to_int(value: Any, where: str, low: int, high: int, name: str) -> int:
    kind = type(value)
    if kind is float:
        if not value.is_integer():
            raise RequestError(f"{where}: expected an integer ({name}), got {value!r}")
        value = int(value)
    elif kind is not int:
        raise _wrong(value, f"an integer ({name})", where)
    if not low <= value <= high:
        raise RequestError(f"{where}: {describe(value)} is out of range for {name}")
    return value


def _to_float(value: Any, where: str, limit: float, name: str) -> float:
    kind = type(value)
    if kind is int:
        if abs(value) > limit:  # checked before float(): huge ints overflow it
            raise RequestError(f"{where}: {describe(value)} is out of range for {name}")
        return float(value)
    if kind is not float:
        raise _wrong(value, f"a number ({name})", where)
    if not -limit <= value <= limit:  # also false for inf and nan
        raise RequestError(f"{where}: {describe(value)} is not a finite {name} (|value| <= {limit:.4g})")
    return value


def _unsupported(value: Any, where: str, name: str):
    raise RequestError(f"{where}: inputs of type {name} are not supported by this server")


def _flatten(value: Any, convert: Callable[[Any, str], Any], where: str, depth: int = 0) -> tuple[tuple[int, ...], list]:
    """``(shape, leaves)`` of a rectangular nested list, each leaf checked by ``convert``."""
    if not isinstance(value, list):
        return (), [convert(value, where)]
    if depth > MAX_JSON_DEPTH:
        raise RequestError(f"{where}: nested too deeply")
    if not value:
        return (0,), []
    shape, leaves = None, []
    for index, item in enumerate(value):
        item_shape, item_leaves = _flatten(item, convert, f"{where}[{index}]", depth + 1)
        if shape is None:
            shape = item_shape
        elif item_shape != shape:
            raise RequestError(f"{where}: ragged array (element {index} has shape {list(item_shape)}, "
                               f"element 0 has {list(shape)})")
        leaves.extend(item_leaves)
    return (len(value),) + shape, leaves


def tensor_from_json(value: Any, spec: tf.TensorSpec, where: str) -> np.ndarray:
    """A numpy array for a signature input, checked against its dtype and shape."""
    array = fast_converter(spec.dtype)(value) if type(value) is list and value else None
    if array is None:  # nested, empty, a scalar, or a bad value to name: value by value
        shape, leaves = _flatten(value, converter(spec.dtype), where)
        dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
        array = np.empty(len(leaves), dtype=dtype)
        array[:] = leaves
        array = array.reshape(shape)
    shape = array.shape
    expected = spec.shape
    if expected.rank is not None:
        if len(shape) != expected.rank:
            raise RequestError(f"{where}: expected {expected.rank} dimension(s) {_shape_text(expected)}, "
                               f"got shape {list(shape)}")
        for size, want in zip(shape, expected.as_list()):
            if want is not None and size != want:
                raise RequestError(f"{where}: expected shape {_shape_text(expected)}, got {list(shape)}")
    return array


def _shape_text(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape.as_list()) + "]"

