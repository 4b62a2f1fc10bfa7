"""Validation of whole batches: the rules of :mod:`pipelines.validate`, column by column in numpy.

For each column a vectorized pass finds the rows whose value is certainly valid under
:func:`feature_specs.values.typed_value` (a present value of a type it reads without doubt, in
range) or certainly missing from an optional column (its default), and types them. A row that is
certain in every column is valid; every other row (unparseable, an unknown column under
``unknown_columns: reject``, a missing required value, text that is not a plain number, a value
out of range, NaN, a type read only by the general rules) is rebuilt as its
:class:`~pipelines.records.RawRecord` and checked by :func:`pipelines.validate.check_record`
itself, so its rejection (reason, field, message) or its typed row is exactly the row-at-a-time
path's. Only the split between those two groups is vectorized, and it is conservative. List
columns read as Arrow lists (Parquet) take the same conservative split (:func:`_arrow_list`); list
columns of text (CSV, JSONL) are typed row by row by the row path's own function (one Python call
per row and list column), so their elements and rejections are the row path's by construction.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from feature_specs.spec import Column, FeatureSpec
from feature_specs.values import InvalidValue, is_missing, typed_list
from pipelines.batches import RawBatch
from pipelines.quality import DistinctSketch, Profile
from pipelines.records import REASONS, Rejection
from pipelines.validate import PROFILE, REJECTED, VALID, check_record, log1p_columns

_FLOAT32_MAX = 3.4028234663852886e38
_EXACT_FLOAT_INT = 2.0**53
_PRESENT = r"^[!-~]"  # starts with a visible ASCII character: certainly not blank
_PLAIN_INT = r"^-?[0-9]{1,18}$"
_PLAIN_FLOAT = r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?$"
_ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "timestamp": pa.int64(), "float": pa.float64()}


def arrow_type(column: Column) -> pa.DataType:
    """A validated column's Arrow type: text, int64 (int and timestamp), float64, or a list of text
    or int64 for a list column."""
    element = _ARROW_TYPES[column.dtype]
    return element if column.list is None else pa.list_(element)


def valid_schema(columns) -> pa.Schema:
    """The Arrow schema of validated rows (:func:`arrow_type` per column)."""
    return pa.schema([(c.name, arrow_type(c)) for c in columns])


def _mask(array) -> np.ndarray:
    """A boolean Arrow array as numpy, nulls False."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(array: pa.Array, dtype) -> np.ndarray:
    return np.asarray(pc.fill_null(array, 0).to_numpy(zero_copy_only=False), dtype=dtype)


def _text_numbers(array: pa.Array, pattern: str, present: np.ndarray, arrow_type) -> tuple[np.ndarray, np.ndarray]:
    """Plain decimal text parsed by Arrow (as Python's int()/float() read it); others not certain."""
    certain = present & _mask(pc.match_substring_regex(array, pattern))
    try:
        values = pc.cast(pc.if_else(pa.array(certain), array, "0"), arrow_type)
    except pa.ArrowInvalid:  # text Arrow does not read: every row by the general rules
        return np.zeros(len(array), dtype=np.int64), np.zeros(len(array), dtype=bool)
    return _numbers(values, np.int64 if arrow_type == pa.int64() else np.float64), certain


def _typed(column: Column, array: pa.Array, present: np.ndarray, log1p: bool) -> tuple[Any, np.ndarray]:
    """``(values, certain)``: the typed values where ``certain`` (present, typed, in range)."""
    kind = array.type
    if column.dtype == "string":
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return array.cast(pa.string()), present
        if pa.types.is_integer(kind) and not pa.types.is_uint64(kind):
            return pc.cast(array, pa.string()), present
        return np.full(len(array), column.default), np.zeros(len(array), dtype=bool)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        pattern, arrow_type = (_PLAIN_FLOAT, pa.float64()) if column.dtype == "float" else (_PLAIN_INT, pa.int64())
        values, certain = _text_numbers(array, pattern, present, arrow_type)
    elif pa.types.is_integer(kind) and not pa.types.is_uint64(kind):
        values = _numbers(array, np.float64 if column.dtype == "float" else np.int64)
        certain = present.copy()
    elif pa.types.is_float32(kind) or pa.types.is_float64(kind):
        floats = _numbers(array, np.float64)
        if column.dtype == "float":
            values, certain = floats, present & np.isfinite(floats) & (np.abs(floats) <= _FLOAT32_MAX)
        else:
            with np.errstate(invalid="ignore"):
                integral = np.isfinite(floats) & (np.floor(floats) == floats) & (np.abs(floats) <= _EXACT_FLOAT_INT)
            values, certain = np.where(integral, floats, 0).astype(np.int64), present & integral
    else:  # a type only the general rules read (bool, timestamp, decimal, ...)
        return np.full(len(array), column.default), np.zeros(len(array), dtype=bool)
    if column.dtype == "float":
        certain &= np.isfinite(values) & (np.abs(values) <= _FLOAT32_MAX)
        low, high = column.min, column.max
    else:  # integer bounds as integers, so comparisons stay exact above 2**53
        low = None if column.min is None else math.ceil(column.min)
        high = None if column.max is None else math.floor(column.max)
    with np.errstate(invalid="ignore"):
        if low is not None:
            certain &= values >= low
        if high is not None:
            certain &= values <= high
        if log1p:
            certain &= values > -1
    return values, certain


class BatchChecker:
    """Validates :class:`RawBatch` elements against a spec, and profiles them.

    Args:
        spec: FeatureSpec. As for :class:`pipelines.validate.ValidateRows`.
        reference: optional feature -> check of reuse mode (:func:`pipelines.validate.reference_checks`).
    """

    def __init__(self, spec: FeatureSpec, reference: Mapping[str, Any] | None = None):
        self.columns = spec.logged_columns
        self.names = frozenset(c.name for c in self.columns)
        self.known = self.names if spec.pipeline.unknown_columns == "reject" else None
        self.log1p = log1p_columns(spec)
        self.schema = valid_schema(self.columns)
        self.numeric = tuple(c.name for c in self.columns if c.is_numeric)
        self.categorical = tuple(c.name for c in self.columns if c.dtype != "float" and not c.is_list)
        self.lists = tuple(c.name for c in self.columns if c.is_list)
        self.reference = dict(reference or {})

    def check(self, batch: RawBatch, profile: Profile) -> tuple[pa.Table, list[Rejection]]:
        """The batch's valid rows (a table of :func:`valid_schema`, in no particular order) and its
        rejections; ``profile`` gets the batch's counts.

        Args:
            batch: RawBatch. The rows as read.
            profile: Profile. Updated with this batch's missing and unknown columns, valid rows'
                ranges and distinct values, and values outside the reused artifacts.
        """
        n = batch.num_rows
        parsed = batch.parsed()
        doubtful = ~parsed
        names = batch.column_names()
        if names is None:
            self._observe_records(batch, profile)
            if self.known is not None:
                doubtful |= np.fromiter((r.values is not None and not self.known.issuperset(r.values.keys())
                                         for r in batch.records), dtype=bool, count=n)
        else:
            profile.rows += n
            for name in set(names) - self.names:
                profile.unknown[name] = profile.unknown.get(name, 0) + n
            if self.known is not None and not self.known.issuperset(names):
                doubtful[:] = True
        arrays = {}
        for column in self.columns:
            values, certain = self._column(batch, column, profile if names is not None else None)
            arrays[column.name] = values
            doubtful |= ~certain
        certain_rows = np.flatnonzero(~doubtful)
        valid = pa.table({c.name: _take(arrays[c.name], certain_rows, c) for c in self.columns}, schema=self.schema)
        rejections, rows = [], []
        for index in np.flatnonzero(doubtful).tolist():
            result = check_record(batch.record(index), self.columns, self.log1p, self.known)
            (rejections if isinstance(result, Rejection) else rows).append(result)
        if rows:
            valid = pa.concat_tables([valid, pa.Table.from_pylist(rows, schema=self.schema)])
        self._profile_valid(valid, profile)
        return valid, rejections

    def _column(self, batch: RawBatch, column: Column, profile: Profile | None):
        """``(values, certain)`` of one column; counts its missing values into ``profile`` (tables)."""
        if column.list is not None:
            return self._list_column(batch, column, profile)
        array, odd = batch.column(column.name)
        n = batch.num_rows
        regular = np.ones(n, dtype=bool) if odd is None else ~odd
        if array is None or pa.types.is_null(array.type):  # no such column, or only nulls
            if profile is not None:
                profile.missing[column.name] = profile.missing.get(column.name, 0) + n
            return np.full(n, column.default), regular & (not column.required)
        null = _mask(array.is_null())
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            present = ~null & _mask(pc.match_substring_regex(array, _PRESENT))
            blank = null | _mask(pc.equal(pc.binary_length(array), 0))
        else:
            present, blank = ~null, null
        present &= regular
        blank &= regular
        if profile is not None:
            unsure = np.flatnonzero(~blank & ~present)
            missing = int(blank.sum()) + sum(1 for i in unsure.tolist() if is_missing(array[i].as_py()))
            if missing:
                profile.missing[column.name] = profile.missing.get(column.name, 0) + missing
        values, certain = _typed(column, array, present, column.name in self.log1p)
        if not column.required and blank.any():  # certainly missing -> the default
            values = _with_default(values, blank, column)
            certain = certain | blank
        return values, certain

    def _list_column(self, batch: RawBatch, column: Column, profile: Profile | None):
        """A list column's ``(values, certain)``: each row's value typed by the row path's own
        :func:`~feature_specs.values.typed_list` (in Python, one call per row); a row it rejects
        is not certain, so :func:`check_record` gives its rejection."""
        n = batch.num_rows
        array, odd = batch.column(column.name)
        fast = None
        if array is not None and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            fast = _text_list(column, array.cast(pa.string()))
        elif array is not None:
            fast = _arrow_list(column, array)
        if fast is not None:
            values, certain, missing = fast
            if odd is not None:
                certain &= ~odd
            if profile is not None and missing:
                profile.missing[column.name] = profile.missing.get(column.name, 0) + missing
            return values, certain
        if batch.table is not None:
            table = batch.table
            raw = table.column(column.name).to_pylist() if column.name in table.column_names else [None] * n
        else:
            raw = [None if r.values is None else r.values.get(column.name) for r in batch.records]
        if profile is not None:
            missing = sum(1 for value in raw if is_missing(value))
            if missing:
                profile.missing[column.name] = profile.missing.get(column.name, 0) + missing
        typed, certain = [], np.ones(n, dtype=bool)
        for index, value in enumerate(raw):
            try:
                typed.append(typed_list(column, value))
            except InvalidValue:
                typed.append([])
                certain[index] = False
        return pa.array(typed, type=arrow_type(column)), certain

    def _observe_records(self, batch: RawBatch, profile: Profile) -> None:
        """Missing and unknown columns of records, one by one (as the row path counts them)."""
        for record in batch.records:
            values = record.values
            if values is None:
                continue
            profile.rows += 1
            for name in self.names:
                if is_missing(values.get(name)):
                    profile.missing[name] = profile.missing.get(name, 0) + 1
            for name in values.keys() - self.names:
                profile.unknown[name] = profile.unknown.get(name, 0) + 1

    def _profile_valid(self, valid: pa.Table, profile: Profile) -> None:
        if valid.num_rows == 0:
            return
        for name in self.numeric:
            bounds = pc.min_max(valid.column(name)).as_py()
            low, high = bounds["min"], bounds["max"]
            if name not in profile.low:
                profile.low[name], profile.high[name] = low, high
            else:
                profile.low[name] = min(profile.low[name], low)
                profile.high[name] = max(profile.high[name], high)
        for name in self.categorical:
            sketch = profile.distinct.get(name)
            if sketch is None:
                sketch = profile.distinct[name] = DistinctSketch()
            sketch.add_many(pc.unique(valid.column(name)).to_pylist())
        for name in self.lists:
            sketch = profile.distinct.get(name)
            if sketch is None:
                sketch = profile.distinct[name] = DistinctSketch()
            sketch.add_many(pc.unique(pc.list_flatten(valid.column(name))).to_pylist())
        for name, check in self.reference.items():
            outside = count_outside(valid.column(name), check)
            if outside:
                profile.outside[name] = profile.outside.get(name, 0) + outside


_PLAIN_LIST_TEXT = r"^[ -Z\\^-~]*$"  # printable ASCII but "[" and "]": no JSON array text, no Unicode spaces


def _text_list(column: Column, array: pa.StringArray):
    """``(values, certain, missing)`` of a list column read as text (CSV, text in JSONL), as
    :func:`~feature_specs.values.typed_list` splits it, in vectorized steps: certain where the
    text is plain printable ASCII (so Python's ``strip`` is a trim of spaces); each element then
    needs a visible character (strings) or plain decimal digits within the bounds (ints); blank or
    null text is the empty list. The other rows go through the row rules; ``missing`` counts
    null or blank text, as the row path's profile does."""
    null = _mask(array.is_null())
    text = pc.fill_null(array, "")
    blank = _mask(pc.equal(pc.utf8_trim(text, " "), ""))
    plain = _mask(pc.match_substring_regex(text, _PLAIN_LIST_TEXT))
    missing = int((null | (blank & plain)).sum()) + sum(1 for value in pc.filter(text, pa.array(~plain & ~null)).to_pylist()
                                                        if is_missing(value))
    parts = pc.split_pattern(pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), text), column.list.separator)
    parts = pc.fill_null(parts, pa.scalar([], pa.list_(pa.string())))  # blank text: no element
    shape = column.list
    lengths = np.asarray(pc.list_value_length(parts).to_numpy(zero_copy_only=False), dtype=np.int64)
    certain = plain.copy()
    if shape.too_long == "reject":
        certain &= lengths <= shape.max_length
    elif (lengths > shape.max_length).any():
        parts = pc.list_slice(parts, 0, shape.max_length).cast(pa.list_(pa.string()))
    offsets = pc.subtract(parts.offsets, parts.offsets[0])
    elements = pc.utf8_trim(parts.flatten(), " ")
    good = _mask(pc.match_substring_regex(elements, _PRESENT))
    if column.dtype == "int":
        good &= _mask(pc.match_substring_regex(elements, _PLAIN_INT))
        numbers = _numbers(pc.cast(pc.if_else(pa.array(good), elements, "0"), pa.int64()), np.int64)
        good &= numbers >= 0
        if column.min is not None:
            good &= numbers >= math.ceil(column.min)
        if column.max is not None:
            good &= numbers <= math.floor(column.max)
        flat = pa.array(np.where(good, numbers, 0), pa.int64())
    else:
        flat = elements
    if not good.all():
        parents = np.asarray(pc.list_parent_indices(parts).to_numpy(zero_copy_only=False), dtype=np.int64)
        certain[parents[~good]] = False
    return pa.ListArray.from_arrays(offsets, flat), certain, missing


def _arrow_list(column: Column, array: pa.Array):
    """``(values, certain, missing)`` of an Arrow list column (Parquet) in vectorized steps, or
    None for element types only the row rules read. As :func:`~feature_specs.values.typed_list`:
    a null list is the empty list, lists are cut to ``max_length`` first (``truncate``) or not
    certain when longer (``reject``); a row is certain when every kept element is: a string that
    starts with a visible ASCII character (certainly not blank), or an int >= 0 within
    ``min``/``max``. The other rows go through the row rules."""
    kind = array.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return None
    element = kind.value_type
    if column.dtype == "string" and not (pa.types.is_string(element) or pa.types.is_large_string(element)):
        return None
    if column.dtype == "int" and not (pa.types.is_integer(element) and not pa.types.is_uint64(element)):
        return None
    target = arrow_type(column)
    array = array.cast(target)
    missing = array.null_count
    array = pc.fill_null(array, pa.scalar([], target))
    shape = column.list
    lengths = np.asarray(pc.list_value_length(array).to_numpy(zero_copy_only=False), dtype=np.int64)
    certain = np.ones(len(array), dtype=bool)
    if shape.too_long == "reject":
        certain &= lengths <= shape.max_length
    elif (lengths > shape.max_length).any():
        array = pc.list_slice(array, 0, shape.max_length).cast(target)
    flat = pc.list_flatten(array)
    if column.dtype == "string":
        good = _mask(pc.match_substring_regex(flat, _PRESENT))
    else:
        numbers = _numbers(flat, np.int64)
        good = ~_mask(flat.is_null()) & (numbers >= 0)
        low = None if column.min is None else math.ceil(column.min)
        high = None if column.max is None else math.floor(column.max)
        if low is not None:
            good &= numbers >= low
        if high is not None:
            good &= numbers <= high
    if not good.all():
        parents = np.asarray(pc.list_parent_indices(array).to_numpy(zero_copy_only=False), dtype=np.int64)
        certain[parents[~good]] = False
    return array, certain, missing


def count_outside(values: pa.ChunkedArray, check) -> int:
    """How many values the reused artifacts do not cover (see :func:`pipelines.validate.count_outside`);
    a list column's elements are counted one by one."""
    if pa.types.is_list(values.type):
        values = pc.list_flatten(values)
    if isinstance(check, tuple):
        inside = pc.and_(pc.greater_equal(values, check[0]), pc.less_equal(values, check[1]))
        return len(values) - int(pc.sum(pc.cast(inside, pa.int64())).as_py() or 0)
    if pa.types.is_floating(values.type):
        return sum(1 for v in values.to_pylist() if str(v) not in check)
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    inside = pc.is_in(text, value_set=pa.array(sorted(check), pa.string()))
    return len(values) - int(pc.sum(pc.cast(inside, pa.int64())).as_py() or 0)


def _with_default(values, where: np.ndarray, column: Column):
    if isinstance(values, np.ndarray):
        values = values.copy()
        values[where] = column.default
        return values
    return pc.if_else(pa.array(where), pa.scalar(column.default, values.type), values)


def _take(values, rows: np.ndarray, column: Column):
    if isinstance(values, np.ndarray):
        return pa.array(values[rows], type=arrow_type(column))
    return values.take(pa.array(rows, pa.int64())).cast(arrow_type(column))


class _ValidateBatchesFn(beam.DoFn):
    """Valid rows (one table per batch) on the main output, rejections one by one on ``rejected``,
    one Profile per bundle on ``profile``."""

    def __init__(self, spec: FeatureSpec, reference: Mapping[str, Any] | None = None):
        self._spec = spec
        self._reference = reference

    def setup(self):
        self._checker = BatchChecker(self._spec, self._reference)
        self._valid = Metrics.counter("pipelines.validate", "valid_rows")
        self._rejected = {reason: Metrics.counter("pipelines.validate", f"rejected_{reason}") for reason in REASONS}

    def start_bundle(self):
        self._profile = Profile()

    def process(self, batch):
        valid, rejections = self._checker.check(batch, self._profile)
        self._valid.inc(valid.num_rows)
        for rejection in rejections:
            self._rejected[rejection.reason].inc()
            yield beam.pvalue.TaggedOutput(REJECTED, rejection)
        if valid.num_rows:
            yield valid

    def finish_bundle(self):
        yield beam.pvalue.TaggedOutput(PROFILE, GlobalWindows.windowed_value(self._profile))


class ValidateBatches(beam.PTransform):
    """:class:`pipelines.validate.ValidateRows` for RawBatch elements.

    Returns (from ``expand``):
        Tagged PCollections ``valid`` (pa.Table of :func:`valid_schema` per batch), ``rejected``
        (:class:`~pipelines.records.Rejection`) and ``profile`` (one Profile per bundle).
    """

    def __init__(self, spec: FeatureSpec, reference: Mapping[str, Any] | None = None):
        super().__init__()
        self._spec = spec
        self._reference = reference

    def expand(self, batches):
        return batches | "Check" >> beam.ParDo(_ValidateBatchesFn(self._spec, self._reference)).with_outputs(
            REJECTED, PROFILE, main=VALID)
