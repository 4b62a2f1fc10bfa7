"""Profiles one sampled column: its type, missing and unparsable values, counts and numbers.

:func:`profile_column` turns a column's raw sampled values (str from CSV, typed values from the
other formats) into a :class:`ColumnProfile`, the facts ``mmoe spec infer`` decides from; the
statistics the decisions share (:func:`moments`, :func:`correlation`) live here too.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from feature_specs.values import is_missing

TYPE_SHARE = 0.98  # share of values that must parse for a column to take a numeric type


LIST_SEPARATORS = (",", "|", ";")  # a string column whose values are joined by one of these may be a list
LIST_SHARE = 0.3  # share of present values holding the separator (the rest are one-element lists)
LIST_ELEMENT_MAX_CHARS = 32  # longer parts are text, not list elements
# Parts holding a space are list elements only when elements repeat: at most this share of the
# parts are distinct ("Film-Noir|(no genres listed)" categories; not "Paris, France" text)
LIST_REPEAT_SHARE = 0.5


def value_kind(value: Any) -> str:
    """``int``, ``float``, ``nonfinite``, ``string``, ``bool``, ``datetime``, ``list`` or ``nested``
    (an object)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "nonfinite"
    if isinstance(value, (datetime.datetime, datetime.date)):
        return "datetime"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "nested"
    if isinstance(value, bytes):
        return "string"
    text = str(value).strip()
    try:
        int(text)
        return "int"
    except ValueError:
        pass
    try:
        return "float" if math.isfinite(float(text)) else "nonfinite"
    except ValueError:
        return "string"


def as_number(value: Any) -> float:
    """A present value of a numeric column as float (NaN when it does not parse)."""
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        return math.nan
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def as_category(value: Any, dtype: str) -> Any:
    """A present value as the pipeline would type it: str for strings, int for ints."""
    if dtype == "string":
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    number = as_number(value)
    return int(number) if math.isfinite(number) and number.is_integer() else None


@dataclass(frozen=True)
class ListShape:
    """A column whose values are lists.

    Args:
        source: str. ``array`` (JSON arrays, Parquet lists, repeated TFRecord values), ``json``
            (JSON array text in CSV) or ``delimited`` (strings joined by ``separator``).
        separator: str or None. The delimiter of ``delimited`` values.
        element_type: str. ``int``, ``float`` or ``string``.
        mean_length: float. Elements per present value.
        distinct_elements: int. Distinct elements in the sample.
        longest: int. Elements of the longest list in the sample.
        negative: bool. Some int element is below 0.
    """

    source: str
    separator: str | None
    element_type: str
    mean_length: float
    distinct_elements: int
    longest: int = 0
    negative: bool = False

    def __str__(self) -> str:
        how = {"array": "arrays", "json": "JSON array text",
               "delimited": f"strings joined by {self.separator!r}"}[self.source]
        return (f"a list of {self.element_type}s ({how}; {self.mean_length:.1f} elements per row on average, "
                f"{self.distinct_elements:,} distinct elements)")


def _element_type(elements: list) -> str:
    kinds = {value_kind(e) for e in elements}
    if kinds <= {"int"}:
        return "int"
    if kinds <= {"int", "float"}:
        return "float"
    return "string"


def _shape(source: str, separator: str | None, lists: list[list]) -> ListShape | None:
    elements = [e for values in lists for e in values]
    if not elements:
        return None
    element_type = _element_type(elements)
    negative = element_type == "int" and min(int(e) for e in elements) < 0
    return ListShape(source, separator, element_type, len(elements) / len(lists),
                     len({str(e) for e in elements}), max(map(len, lists)), negative)


def list_shape(present: Sequence[Any], kinds: collections.Counter) -> ListShape | None:
    """How the present values of a column are lists, or None when they are not."""
    if not present:
        return None
    if kinds.most_common(1)[0][0] == "list":
        return _shape("array", None, [list(v) for v in present if isinstance(v, (list, tuple))])
    texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in present]
    if not all(isinstance(t, str) for t in texts):
        return None
    texts = [t.strip() for t in texts]
    if all(t.startswith("[") and t.endswith("]") for t in texts):
        try:
            parsed = [json.loads(t) for t in texts]
        except (json.JSONDecodeError, RecursionError):
            parsed = []
        if parsed and all(isinstance(p, list) and all(not isinstance(e, (list, dict)) for e in p) for p in parsed):
            return _shape("json", None, parsed)
    for separator in LIST_SEPARATORS:
        joined = sum(separator in t for t in texts)
        if joined < LIST_SHARE * len(texts):
            continue
        lists = [[part.strip() for part in t.split(separator)] for t in texts]
        parts = [p for values in lists for p in values]
        spaced = any(" " in p for p in parts)
        if (all(p and len(p) <= LIST_ELEMENT_MAX_CHARS for p in parts)
                and (not spaced or len(set(parts)) <= LIST_REPEAT_SHARE * len(parts))):
            if len({len(values) for values in lists}) > 1:  # one length throughout: "3,14" or "lat,lon", not a list
                return _shape("delimited", separator, lists)
    return None


@dataclass
class ColumnProfile:
    """What a sample says about one column.

    Args:
        name: str. Column name.
        dtype: str or None. ``int``, ``float`` or ``string``; None for columns the spec cannot
            declare (lists, booleans, datetimes).
        kinds: Counter of value kinds (see :func:`value_kind`) over present values.
        rows: int. Rows in the sample.
        missing: int. Rows without a value.
        bad: int. Present values that do not parse as ``dtype`` (the pipeline rejects their rows).
        bad_example: one such value, for messages.
        counts: Counter ``{typed value: rows}`` for int and string columns.
        numbers: ``(rows,)`` float64 array for int and float columns, NaN where missing or bad.
        codes: ``(rows,)`` int64 array for int and string columns: each row's index into
            ``counts``, -1 where missing or bad.
        lists: ListShape or None. How the values are lists (arrays, JSON text or delimited
            strings); None for scalar columns.
    """

    name: str
    dtype: str | None
    kinds: collections.Counter
    rows: int
    missing: int
    bad: int = 0
    bad_example: Any = None
    counts: collections.Counter = field(default_factory=collections.Counter)
    numbers: np.ndarray | None = None
    codes: np.ndarray | None = None
    lists: ListShape | None = None

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def distinct(self) -> int:
        if self.counts:
            return len(self.counts)
        if self.numbers is not None:
            finite = self.numbers[np.isfinite(self.numbers)]
            return int(np.unique(finite).size)
        return 0

    @property
    def valid_numbers(self) -> np.ndarray:
        return self.numbers[np.isfinite(self.numbers)] if self.numbers is not None else np.empty(0)


def column_dtype(kinds: collections.Counter, present: int) -> str | None:
    if not present:
        return None
    top = kinds.most_common(1)[0][0]
    if top in ("list", "nested", "bool", "datetime"):
        return None
    numeric = kinds["int"] + kinds["float"] + kinds["nonfinite"]
    if numeric >= TYPE_SHARE * present:
        return "int" if kinds["float"] == 0 and kinds["nonfinite"] == 0 else "float"
    return "string"


def profile_column(name: str, values: Sequence[Any]) -> ColumnProfile:
    """Profiles one column's sampled values (missing values as None or blank strings)."""
    present = [v for v in values if not is_missing(v)]
    value_kinds = [value_kind(v) for v in present]
    kinds = collections.Counter(value_kinds)
    dtype = column_dtype(kinds, len(present))
    profile = ColumnProfile(name=name, dtype=dtype, kinds=kinds, rows=len(values), missing=len(values) - len(present))
    if dtype in (None, "string"):
        profile.lists = list_shape(present, kinds)
    if dtype is None:
        return profile
    good_kinds = {"string": ("string", "int"), "int": ("int",), "float": ("int", "float")}[dtype]
    # the pipeline types Parquet/JSON ints as their text in string columns, but not floats
    bad = [v for v, kind in zip(present, value_kinds)
           if kind not in good_kinds and not (dtype == "string" and isinstance(v, str))]
    profile.bad, profile.bad_example = len(bad), (bad[0] if bad else None)
    if dtype in ("int", "float"):
        profile.numbers = np.array([math.nan if is_missing(v) else as_number(v) for v in values], dtype=np.float64)
    if dtype in ("int", "string"):
        categories = [None if is_missing(v) else as_category(v, dtype) for v in values]
        profile.counts = collections.Counter(c for c in categories if c is not None)
        index = {category: i for i, category in enumerate(profile.counts)}
        profile.codes = np.array([-1 if c is None else index[c] for c in categories], dtype=np.int64)
    return profile


def snake_name(name: str) -> str:
    """``name`` lowercased, camelCase words split by ``_`` (``movieId`` -> ``movie_id``): what
    the rules on column names match."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def moments(values: np.ndarray) -> tuple[float, float]:
    """(skewness, excess kurtosis) of ``values``; (0, 0) for a constant array."""
    centered = values - values.mean()
    std = centered.std()
    if std == 0 or values.size < 3:
        return 0.0, 0.0
    return float(np.mean(centered**3) / std**3), float(np.mean(centered**4) / std**4 - 3.0)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """|Pearson correlation| over rows where both are finite; 0 when either is constant there."""
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        return 0.0
    x, y = a[both], b[both]
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(abs(np.corrcoef(x, y)[0, 1]))
