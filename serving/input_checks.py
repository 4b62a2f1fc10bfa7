"""Signature inputs against the spec, checked before the model sees them (and before batching).

A client's value the spec rules out is a 400 naming the row and the feature, never a model call
that fails (and, batched, makes its neighbours' batch fail) or scores garbage:

* :func:`check_ranges`: numeric raw features (``predict_raw``: rank requests and predict with
  ``signature_name: predict_raw``) against each column's ``min``/``max``, finiteness and, for
  ``log1p`` features, log1p's domain: the pipeline's own rules
  (:func:`feature_specs.values.typed_value`), so the server takes what training could have seen.
* :func:`check_examples`: serialized tf.Examples (``serving_default``) decoded with protobuf and
  read as the model's ``tf.io.parse_example`` would read them (a missing required feature, a
  feature of the wrong kind or with other than one value is refused), then their ranges.

* :func:`padded_lists`: list features (``predict_raw``) checked element by element with the
  pipeline's :func:`feature_specs.values.typed_list` (a wrong element type, an empty string, a
  negative int, a list over ``max_length`` under ``too_long: reject`` is a 400 naming the row and
  feature) and padded to ``[rows, max_length]``, so requests batch together.

The spec has no option to clip an out-of-range value: such a value is refused.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
from google.protobuf.message import DecodeError

from feature_specs.example_proto import Example
from feature_specs.spec import LIST_PADDING, Column
from feature_specs.tensors import TF_DTYPES
from feature_specs.values import InvalidValue, typed_list, typed_value
from serving.contract import DEFAULT_SIGNATURE, EXAMPLES_INPUT, RANK_SIGNATURE
from serving.errors import RequestError
from serving.responses import check_finite
from serving.table_lookup import NOT_SENT

if TYPE_CHECKING:
    from serving.models import ServedVersion

# (row index, feature name) -> where that value came from, e.g. "candidates[3]" or "context"
Where = Callable[[int, str], str]

# the tf.Example list each spec dtype is parsed from, holding its TF_DTYPES (bytes, int64, float32)
EXAMPLE_KINDS = {"string": "bytes_list", "int": "int64_list", "timestamp": "int64_list", "float": "float_list"}


def goes_through_log1p(column: Column) -> bool:
    """Whether the model applies log1p to the column (a ``log1p`` feature), so it must be > -1."""
    return getattr(column, "transform", None) == "log1p"


def check_ranges(arrays: Mapping[str, np.ndarray | list], columns: Sequence[Column], where: Where,
                 looked_up: frozenset[str] = frozenset()) -> None:
    """Refuses the first numeric value outside its column's range.

    Each column costs two numpy reductions (or one pass over a short list) when all is well;
    otherwise the values outside the limits (:func:`_limits`) are candidates, and the pipeline's
    :func:`~feature_specs.values.typed_value` decides each one and words the error.

    Args:
        arrays: input name -> the values of that column, one per row: a 1-D numpy array of the
            column's dtype, or a list of Python numbers (columns absent here are skipped).
        columns: the served spec's columns (:func:`feature_specs.tensors.serving_columns`).
        where: names the source of row ``i``'s value of a feature.
        looked_up: side table features, whose "not sent" marker
            (:data:`serving.table_lookup.NOT_SENT`) is not a value to check.

    Raises:
        RequestError: 400, ``"<where>: <feature>=<value> is above the maximum <max>"`` and the like.
    """
    for column in columns:
        values = arrays.get(column.name)
        if values is None or not column.is_numeric:
            continue
        log1p = goes_through_log1p(column)
        low, high = _limits(column.min, column.max, log1p, column.dtype)
        if column.name in looked_up:  # a "not sent" marker is looked up, not checked
            values = [low if _is_not_sent(column, v) else v for v in np.asarray(values).tolist()]
        if isinstance(values, np.ndarray):
            if not values.size or (values.min() >= low and values.max() <= high):  # false for NaN too
                continue
            values = values.tolist()
        elif all(low <= value <= high for value in values):
            continue
        for index, value in enumerate(values):
            if not low <= value <= high:
                try:
                    typed_value(column, value, log1p)
                except InvalidValue as error:
                    raise RequestError(f"{where(index, column.name)}: {error.message}") from None


@functools.lru_cache(maxsize=256)
def _limits(minimum: float | None, maximum: float | None, log1p: bool, dtype: str) -> tuple[float, float]:
    """``(low, high)``, Python floats: the values of a column of spec ``dtype`` with these bounds
    lie within them.

    Float bounds are rounded to float32, as the model sees values (a float32 value equal to
    ``max`` as float32 is in range); floats without a bound are still limited to finite values,
    log1p features to > -1.
    """
    if TF_DTYPES[dtype].is_floating:
        kind = TF_DTYPES[dtype].as_numpy_dtype
        largest = float(np.finfo(kind).max)
        with np.errstate(over="ignore"):  # a bound beyond float32 becomes inf, and holds every value
            low = float(kind(minimum if minimum is not None else -largest))
            high = float(kind(maximum if maximum is not None else largest))
        log1p_low = float(np.nextafter(kind(-1), kind(0)))
    else:
        low = minimum if minimum is not None else -math.inf
        high = maximum if maximum is not None else math.inf
        log1p_low = 0.0
    if log1p:
        low = max(low, log1p_low)
    return low, high


def _padding(column: Column):
    """The padding element as the signature's arrays hold it (bytes for strings)."""
    pad = LIST_PADDING[column.dtype]
    return pad.encode() if isinstance(pad, str) else pad


def list_rows(column: Column, rows, where: Where) -> np.ndarray:
    """One list feature's rows as ``[len(rows), max_length]``, each checked by
    :func:`~feature_specs.values.typed_list`.

    Args:
        column: the list column.
        rows: one list of elements per row (None: the empty list; text: split at the
            separator), or a 2-D array; trailing padding elements (``""``/-1) are dropped first.
        where: names row ``i``'s value of the feature.

    Raises:
        RequestError: 400, ``"<where>: tags[1]: list element is empty"`` and the like.
    """
    pad = _padding(column)
    width = column.list.max_length
    out = np.full((len(rows), width), pad, dtype=object if column.dtype == "string" else np.int64)
    for index, row in enumerate(rows):
        if isinstance(row, np.ndarray):
            row = row.tolist()
        items = list(row) if isinstance(row, (list, tuple)) else row  # text or a scalar: typed_list reads it
        while isinstance(items, list) and items and items[-1] in (pad, LIST_PADDING[column.dtype]):
            items.pop()  # trailing padding: bytes from tensors, text from JSON
        try:
            typed = typed_list(column, items)
        except InvalidValue as error:
            raise RequestError(f"{where(index, column.name)}: {error.message}") from None
        if column.dtype == "string":
            typed = [value.encode("utf-8") for value in typed]
        out[index, :len(typed)] = typed
    return out


def padded_lists(arrays: Mapping[str, np.ndarray], columns: Sequence[Column], where: Where) -> dict:
    """``arrays`` with every list feature replaced by :func:`list_rows` of it (others as they are)."""
    out = dict(arrays)
    for column in columns:
        if column.is_list and column.name in out:
            out[column.name] = list_rows(column, out[column.name], where)
    return out


def _is_not_sent(column: Column, value) -> bool:
    """A side table feature's "not sent" marker (:data:`serving.table_lookup.NOT_SENT`)."""
    if column.dtype == "float":
        return value != value  # NaN
    return value == NOT_SENT[column.dtype]


def check_examples(serialized: Sequence[bytes], columns: Sequence[Column], where: Where,
                   looked_up: frozenset[str] = frozenset()) -> None:
    """Refuses the first serialized tf.Example that ``serving_default`` could not parse or score.

    Mirrors ``tf.io.parse_example`` with :func:`feature_specs.tensors.parse_spec`: a feature that
    is absent (or holds no list) takes the column's default when ``required: false``, else is an
    error; a present feature needs the list of its dtype holding exactly one value. Features the
    model does not read are ignored. The numeric values then go through :func:`check_ranges`.
    About 15 µs an example of eight features: one protobuf parse and three lookups per feature.

    Args:
        serialized: the ``examples`` input, bytes per row.
        columns: the served spec's columns.
        where: names row ``i`` (its feature argument is the feature at fault).
        looked_up: side table features: absent, they are looked up by the model.

    Raises:
        RequestError: 400 naming the row and, where one is at fault, the feature.
    """
    values: dict[str, list] = {c.name: [] for c in columns if c.is_numeric}
    plan = [(column, EXAMPLE_KINDS[column.dtype], values.get(column.name)) for column in columns if not column.is_list]
    lists = [(column, EXAMPLE_KINDS[column.dtype]) for column in columns if column.is_list]
    parse = Example.FromString
    for index, data in enumerate(serialized):
        try:
            features = parse(data).features.feature
        except DecodeError:
            raise RequestError(f"{where(index, '')}: {len(data)} bytes that do not parse as a serialized "
                               "tf.Example") from None
        for column, kind, sink in plan:
            feature = features.get(column.name)
            items = getattr(feature, kind).value if feature is not None else ()
            if not items and feature is None and column.name in looked_up:
                value = NOT_SENT[column.dtype]
            else:
                value = items[0] if len(items) == 1 else _absent_or_wrong(feature, column, where(index, column.name))
            if sink is not None:
                sink.append(value)
        for column, kind in lists:
            _check_list_feature(features.get(column.name), column, kind, where(index, column.name))
    check_ranges(values, columns, where, looked_up)


def _check_list_feature(feature, column: Column, kind: str, where: str) -> None:
    """A list feature of an Example: absent or empty (the empty list), else its dtype's list with
    elements :func:`~feature_specs.values.typed_list` accepts."""
    found = feature.WhichOneof("kind") if feature is not None else None
    if found is None:
        return
    if found != kind:
        raise RequestError(f"{where}: feature {column.name!r} holds a {found}; the spec's {column.kind} column "
                           f"needs a {kind}")
    try:
        typed_list(column, list(getattr(feature, kind).value))
    except InvalidValue as error:
        raise RequestError(f"{where}: {error.message}") from None


def _absent_or_wrong(feature, column: Column, where: str):
    """The default of an optional ``column`` absent from an Example; else the error saying why its
    ``feature`` (None when absent) does not hold one value of the column's kind."""
    kind = feature.WhichOneof("kind") if feature is not None else None
    if kind is None:
        if column.required:
            raise RequestError(f"{where}: feature {column.name!r} ({column.dtype}) is missing from the tf.Example")
        return column.default
    expected = EXAMPLE_KINDS[column.dtype]
    if kind != expected:
        raise RequestError(f"{where}: feature {column.name!r} holds a {kind}; "
                           f"the spec's {column.dtype} column needs a {expected}")
    raise RequestError(f"{where}: feature {column.name!r} holds {len(getattr(feature, kind).value)} values; "
                       "expected exactly 1")


def checked_call(served: ServedVersion, name: str, inputs: dict, where: Where,
                 row: Callable[[int], str], checked_outputs: Sequence[str] | None = None) -> dict:
    """Signature ``name`` of ``served`` on ``inputs``, checked before (the spec's ranges for
    ``predict_raw``, the tf.Examples for ``serving_default``) and after (finite outputs).

    Args:
        served: the version that answers.
        name: a signature of it.
        inputs: input name -> numpy array, rows first.
        where: names row ``i``'s value of a feature, for the input checks.
        row: names row ``i``, for the output check.
        checked_outputs: the outputs that must be finite (those answered); None for all.

    Returns:
        Output name -> numpy array.

    Raises:
        RequestError: 400 for a value the spec rules out or an output that is not finite.
    """
    if name == RANK_SIGNATURE:
        inputs = padded_lists(inputs, served.columns, where)
        check_ranges(inputs, served.columns, where, served.spec.table_column_names)
    elif name == DEFAULT_SIGNATURE:
        check_examples(inputs[EXAMPLES_INPUT], served.columns, where, served.spec.table_column_names)
    outputs = served.signatures[name](inputs)
    check_finite(outputs if checked_outputs is None else {key: outputs[key] for key in checked_outputs}, row)
    return outputs
