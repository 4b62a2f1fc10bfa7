"""Request bodies to signature inputs: JSON parsing and validation of predict and rank requests.

Predict follows TF Serving's REST API: the row format ``{"instances": [...]}`` or the columnar
format ``{"inputs": ...}``; binary strings travel as ``{"b64": "..."}``. Rank takes
``{"context": {...}, "candidates": [{...}, ...], "top_k": k}`` with the raw features of the spec
stored in the SavedModel. Every mistake raises :class:`~serving.errors.RequestError` naming the
field, the feature, the index.

A list feature is sent as a JSON array per row (or per candidate, or once in ``context``; text
is split at the spec's separator, as the pipeline reads it), of any length: rows need not be
padded. Rank requests are padded to the spec's ``max_length`` here; predict requests on
``predict_raw`` take each row's array as it is (an input whose signature shape is ``[None,
None]``) and are checked and padded with the spec (:func:`serving.input_checks.padded_lists`).
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orjson
import tensorflow as tf

from feature_specs.spec import Column
from feature_specs.tensors import TF_DTYPES
from serving.convert import converter, fast_converter, tensor_from_json
from serving.errors import RequestError, describe, type_name
from serving.input_checks import list_rows
from serving.table_lookup import NOT_SENT

_MISSING = object()  # a feature that is neither in the candidate nor in the context


def parse_json_object(body: bytes) -> dict:
    """The request body as a JSON object.

    Decoded by orjson (strict RFC 8259, about 3× faster than the stdlib on a rank request).

    Raises:
        RequestError: if the body is empty, not UTF-8 (lone surrogates included), not JSON
            (``NaN`` included), nested deeper than 1024, or not an object.
    """
    if not body.strip():
        raise RequestError("empty request body; expected a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RequestError(f"request body must be a JSON object, got {type_name(value)}")
    return value


# -- predict ---------------------------------------------------------------------------------------


def parse_predict(request: Mapping, inputs: Mapping[str, tf.TensorSpec]) -> tuple[dict[str, np.ndarray], str]:
    """The signature inputs of a TF Serving predict request and its format (``row``/``columnar``).

    Args:
        request: the JSON body, with ``instances`` (row format) or ``inputs`` (columnar).
        inputs: the signature's input specs.

    Raises:
        RequestError: if the format is ambiguous, inputs are missing, unknown, mistyped or of
            different batch sizes.
    """
    unknown = set(request) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise RequestError(f"unknown request field(s) {sorted(unknown)}; expected 'instances' or 'inputs' "
                           "and optionally 'signature_name'")
    if ("instances" in request) == ("inputs" in request):
        raise RequestError("a predict request needs exactly one of 'instances' (row format) or 'inputs' (columnar)")
    if "instances" in request:
        arrays = _row_inputs(request["instances"], inputs)
        fmt = "row"
    else:
        arrays = _columnar_inputs(request["inputs"], inputs)
        fmt = "columnar"
    sizes = {name: int(value.shape[0]) for name, value in arrays.items() if value.ndim}
    if len(set(sizes.values())) > 1:
        raise RequestError(f"inputs have different batch sizes: {sizes}")
    if sizes and set(sizes.values()) == {0}:
        raise RequestError("the request holds no rows to predict")
    return arrays, fmt


def predict_rows(fmt: str) -> Callable[[int], str]:
    """Names row ``i`` of a predict request in error messages: ``instances[i]`` (row format) or
    ``row i of 'inputs'`` (columnar)."""
    if fmt == "row":
        return lambda index: f"instances[{index}]"
    return lambda index: f"row {index} of 'inputs'"


def _row_inputs(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise RequestError(f"'instances' must be a list, got {type_name(instances)}")
    if not instances:
        raise RequestError("'instances' is empty; send at least one instance")
    names = sorted(specs)
    single = names[0] if len(names) == 1 else None
    named = all(isinstance(i, dict) and not (set(i) == {"b64"} and single) for i in instances)
    if named:
        columns: dict[str, list] = {name: [] for name in names}
        for index, instance in enumerate(instances):
            _check_names(instance, specs, f"instances[{index}]")
            for name in names:
                columns[name].append(instance[name])
    elif single is not None:
        columns = {single: instances}
    else:
        bad = next(i for i, v in enumerate(instances) if not isinstance(v, dict))
        raise RequestError(f"instances[{bad}]: expected an object of named inputs {names}, "
                           f"got {type_name(instances[bad])}")
    return {name: _input(values, specs[name], f"instances[*].{name}") for name, values in columns.items()}


def is_list_input(spec: tf.TensorSpec) -> bool:
    """A signature input of shape ``[None, None]``: a list feature of ``predict_raw``."""
    return spec.shape.rank == 2 and spec.shape.as_list() == [None, None]


def _input(values: Any, spec: tf.TensorSpec, where: str) -> np.ndarray:
    """A predict input: :func:`tensor_from_json`, or for a list input one row per item (each a
    JSON array of any length, kept as it is for the spec's checks)."""
    if not is_list_input(spec):
        return tensor_from_json(values, spec, where)
    if not isinstance(values, list):
        raise RequestError(f"{where}: expected a list of rows (one array of elements each), got {type_name(values)}")
    rows = np.empty(len(values), dtype=object)
    rows[:] = values
    return rows


def _columnar_inputs(inputs: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    names = sorted(specs)
    if isinstance(inputs, dict) and not (len(names) == 1 and set(inputs) == {"b64"}):
        _check_names(inputs, specs, "inputs")
        return {name: _input(inputs[name], specs[name], f"inputs.{name}") for name in names}
    if len(names) == 1:
        return {names[0]: _input(inputs, specs[names[0]], f"inputs.{names[0]}")}
    raise RequestError(f"'inputs' must be an object of named inputs {names}, got {type_name(inputs)}")


def _check_names(given: Mapping, specs: Mapping, where: str) -> None:
    missing = sorted(set(specs) - set(given))
    unknown = sorted(set(given) - set(specs))
    if missing:
        raise RequestError(f"{where}: missing input(s) {missing}; this signature takes {sorted(specs)}")
    if unknown:
        raise RequestError(f"{where}: unknown input(s) {unknown}; this signature takes {sorted(specs)}")


# -- rank ------------------------------------------------------------------------------------------


def parse_rank(request: Mapping, columns: Sequence[Column], max_candidates: int,
               looked_up: frozenset[str] = frozenset()) -> tuple[dict[str, np.ndarray], int | None]:
    """``predict_raw`` inputs (one row per candidate) and ``top_k`` from a rank request.

    A feature is read from the candidate, else from ``context``, else from the column's default
    when the spec marks it ``required: false``.

    Args:
        request: ``{"context": {...}, "candidates": [{...}, ...], "top_k": k}``.
        columns: the serving columns of the spec stored in the SavedModel.
        max_candidates: the most candidates one request may hold.
        looked_up: side table features: one neither the candidate nor the context sends is
            "not sent" (:data:`serving.table_lookup.NOT_SENT`), looked up by the model.

    Raises:
        RequestError: naming the field, candidate index and feature that is wrong.
    """
    unknown = set(request) - {"context", "candidates", "top_k"}
    if unknown:
        raise RequestError(f"unknown request field(s) {sorted(unknown)}; expected 'context', 'candidates', 'top_k'")
    context = request.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise RequestError(f"'context' must be an object of features, got {type_name(context)}")
    if "candidates" not in request:
        raise RequestError("missing 'candidates': a list of objects of item features")
    candidates = request["candidates"]
    if not isinstance(candidates, list):
        raise RequestError(f"'candidates' must be a list of objects, got {type_name(candidates)}")
    if not candidates:
        raise RequestError("'candidates' is empty; send at least one candidate")
    if len(candidates) > max_candidates:
        raise RequestError(f"{len(candidates)} candidates is more than this server's limit of {max_candidates}", 413)
    top_k = _top_k(request.get("top_k"))
    known = {c.name for c in columns}
    _check_features(context, known, "context")
    own = _uniform_columns(candidates) if set(map(type, candidates)) == {dict} else None
    if own is None:
        _check_candidates(candidates, known)
    else:  # every candidate has the first one's features: checking those checks all
        _check_features(candidates[0], known, "candidates[0]")
    return {column.name: _column_values(column, context, candidates, own, column.name in looked_up)
            for column in columns}, top_k


def rank_sources(request: Mapping) -> Callable[[int, str], str]:
    """Names where candidate ``i``'s value of a feature came from, for a request that
    :func:`parse_rank` accepted: ``candidates[i]``, else ``context``, else the spec's default."""
    candidates, context = request["candidates"], request.get("context") or {}

    def source(index: int, feature: str) -> str:
        if feature in candidates[index]:
            return f"candidates[{index}]"
        return "context" if feature in context else f"the spec's default (candidates[{index}])"

    return source


def _check_candidates(candidates: list, known: set[str]) -> None:
    """Every candidate is an object of known features (checked at C speed; the loop only names a bad one)."""
    if set(map(type, candidates)) == {dict} and all(map(known.issuperset, candidates)):
        return
    for index, candidate in enumerate(candidates):
        if not isinstance(candidate, dict):
            raise RequestError(f"candidates[{index}] must be an object of features, got {type_name(candidate)}")
        _check_features(candidate, known, f"candidates[{index}]")


def _uniform_columns(candidates: list[dict]) -> dict[str, tuple] | None:
    """The candidates' values by feature, read in one pass, when all (dicts) carry the same
    features; else None."""
    first = candidates[0]
    if not first or set(map(len, candidates)) != {len(first)}:
        return None
    names = tuple(first)
    try:
        rows = list(map(operator.itemgetter(*names), candidates))
    except KeyError:  # same number of features, different names
        return None
    if len(names) == 1:
        return {names[0]: tuple(rows)}
    return dict(zip(names, zip(*rows)))


def _top_k(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"'top_k' must be a positive integer, got {describe(value)}")
    return value


def _check_features(features: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(set(features) - known)
    if unknown:
        raise RequestError(f"{where}: unknown feature(s) {unknown}; the model takes {sorted(known)}")


def _column_values(column: Column, context: Mapping, candidates: list[Mapping],
                   own: Mapping[str, tuple] | None = None, looked_up: bool = False) -> np.ndarray:
    """One ``predict_raw`` input: each candidate's value, else the context's, else the default.

    ``own`` is :func:`_uniform_columns` of the candidates, if they all carry the same features.
    Converted in one vectorized step (:func:`fast_converter`); if that declines, value by value
    (:func:`_checked_column_values`), which raises the error naming the bad candidate. A list
    feature left out everywhere is the empty list; its rows are ``[candidates, max_length]``
    (:func:`serving.input_checks.list_rows`).
    """
    if column.is_list:
        return _list_column_values(column, context, candidates)
    dtype = TF_DTYPES[column.dtype]
    name = column.name
    fill, where = _MISSING, ""
    if name in context:
        fill, where = context[name], f"context.{name}"
    elif looked_up:
        fill, where = NOT_SENT[column.dtype], f"{name} looked up"
    elif not column.required:
        fill, where = column.default, f"default of {name}"
    if fill is not _MISSING:
        converter(dtype)(fill, where)  # a bad shared value is named as such, even if no candidate uses it
    if own is None:
        values = [candidate.get(name, fill) for candidate in candidates]
    else:
        values = own[name] if name in own else [fill] * len(candidates)
    array = fast_converter(dtype)(values)  # declines if a value is missing (_MISSING) or wrong
    if array is None:
        array = _checked_column_values(column, fill, where, candidates)
    return array


def _list_column_values(column: Column, context: Mapping, candidates: list[Mapping]) -> np.ndarray:
    name = column.name
    shared = context.get(name)
    if shared is not None:
        list_rows(column, [shared], lambda index, feature: "context")  # a bad shared list is named as such
    rows = [candidate.get(name, shared) for candidate in candidates]
    return list_rows(column, rows, lambda index, feature: f"candidates[{index}]" if feature in candidates[index]
                     else "context")


def _checked_column_values(column: Column, fill: Any, where: str, candidates: list[Mapping]) -> np.ndarray:
    """The slow path of :func:`_column_values`: converts value by value, naming the first bad one."""
    dtype = TF_DTYPES[column.dtype]
    convert = converter(dtype)
    name = column.name
    shared = None if fill is _MISSING else convert(fill, where)
    values = []
    for index, candidate in enumerate(candidates):
        if name in candidate:
            values.append(convert(candidate[name], f"candidates[{index}].{name}"))
        elif shared is not None:
            values.append(shared)
        else:
            raise RequestError(f"candidates[{index}]: missing feature {column.name!r} ({column.dtype}); "
                               "send it in the candidate or in 'context'")
    array = np.empty(len(values), dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    array[:] = values
    return array

