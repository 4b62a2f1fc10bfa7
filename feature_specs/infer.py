"""Proposes a feature spec for a log nobody has written one for (``mmoe spec infer``).

:func:`infer_spec` reads a bounded sample of a CSV, Parquet or JSONL file (or a glob of them),
profiles every column and writes a complete spec as YAML, each choice explained in a comment:

* types from the values (``int``, ``float``, ``string``); list or boolean columns are left out;
* strings and low-cardinality ints: ``vocabulary`` (``top_k``/``min_count`` from the counts), or
  ``hashing`` when the sample already holds more than :data:`VOCABULARY_MAX_DISTINCT` values or
  mostly values seen once; embedding width ``6 * cardinality ** 0.25``, capped;
* numbers: ``zscore``; ``log1p`` when non-negative and right-skewed; ``quantile`` buckets when the
  tails stay heavy;
* columns that look like row ids (unique per row), timestamps, constants or leaked labels (a
  near-perfect correlate of a label) are left out, with a comment saying why;
* tasks: the first label must be 0/1 (the click-like task); a 0/1 label is a binary task, any other
  a regression (``log1p`` when non-negative and skewed, masked by the first label when it is only
  non-zero where that label is 1);
* the ranking group (``group_by``) and a hash split on it (else on a row id).

The result loads with :func:`feature_specs.spec.load_spec` and runs through ``mmoe run`` as is.
Only the first ``max_rows`` rows are read; nothing loads a whole file. Like the rest of this
package, the module imports neither TensorFlow nor Beam (the CSV/JSONL line rules mirror
``pipelines/read.py``: a header line, one record per line, blank lines skipped).
"""

from __future__ import annotations

import collections
import csv
import datetime
import difflib
import fnmatch
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from feature_specs.input_formats import format_from_extension, strip_compression
from feature_specs.spec import FeatureSpec, spec_from_dict

SAMPLE_ROWS = 20_000
INFER_FORMATS = ("csv", "parquet", "jsonl")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".lz4")

VOCABULARY_MAX_INT_DISTINCT = 50  # ints with at most this many values from 0/1 in a narrow span are codes
CODE_MAX_SPAN = 100
CODE_MAX_DISTINCT_ANY_RANGE = 12
VOCABULARY_MAX_DISTINCT = 1000  # more distinct values in the sample: hashing
HASHING_MAX_BINS = 2**18
EMBEDDING_MAX_DIM = 32
ID_UNIQUE_SHARE = 0.99
ID_MIN_ROWS = 20
TYPE_SHARE = 0.98  # share of values that must parse for a column to take a numeric type
MOSTLY_MISSING_SHARE = 0.5
LEAK_CORRELATION = 0.98
SKEW_LOG1P = 1.0
HEAVY_TAIL_KURTOSIS = 10.0
QUANTILE_BUCKETS = 16
EPOCH_SECONDS = (1e9, 4.2e9)  # 2001-09 .. 2103: int columns in this range may be timestamps
EPOCH_MILLIS = (1e12, 4.2e12)
MISSING_STRING = "__missing__"

_TIME_NAME = re.compile(r"(^|_)(ts|time|timestamp|date|datetime|epoch|created|updated|day)(_|$)|_at$|time")
_CODE_NAME = re.compile(r"(^|_)(id|ids|code|cat|category|categorical|type|class)(_|$)")
_POSITION_NAME = re.compile(r"^(position|pos|slot|display_position|rank_position)$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


class InferError(ValueError):
    """The data cannot be turned into a spec as asked; the message names the column or file."""


# --------------------------------------------------------------------------------------------
# Reading a bounded sample


@dataclass
class Sample:
    """The first rows of a data set, as read.

    Args:
        path: str. The file or glob pattern given.
        files: list of str. The files matched, in the order read.
        input_format: str. ``csv``, ``parquet`` or ``jsonl``.
        columns: list of str. Column names in file order (JSONL: in order of first appearance).
        rows: list of dict ``{column: raw value}``: CSV values are str, Parquet and JSONL values
            keep their types.
        unparsed_lines: int. CSV/JSONL lines that did not parse (the pipeline rejects them).
        exhausted: bool. Every row of every file was read (the sample is the whole data set).
    """

    path: str
    files: list[str]
    input_format: str
    columns: list[str]
    rows: list[dict]
    unparsed_lines: int = 0
    exhausted: bool = False


def input_format_of(path: str) -> str:
    """The format of ``path`` from its extension (as ``pipelines.options.infer_input_format``).

    Raises:
        InferError: for TFRecord or an extension that names no supported format.
    """
    input_format = format_from_extension(path, _COMPRESSION_SUFFIXES)
    if input_format in INFER_FORMATS:
        return input_format
    name = strip_compression(path, _COMPRESSION_SUFFIXES)
    raise InferError(
        f"{path}: unsupported format (extension {os.path.splitext(name)[1] or 'none'}); `mmoe spec` reads "
        "CSV (.csv, with a header line), Parquet (.parquet, .pq) or JSONL (.jsonl, .ndjson, .json), "
        "optionally compressed (.gz, .bz2, .zst)")


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it (local paths, or URIs pyarrow supports)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def match_files(path: str) -> tuple[pafs.FileSystem, list[str]]:
    """The files a path or glob pattern (wildcards in the last component) names, sorted.

    Raises:
        InferError: when nothing matches.
    """
    filesystem, inner = _filesystem(path)
    directory, base = os.path.split(inner)
    if any(ch in base for ch in "*?["):
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except OSError as exc:
            raise InferError(f"{path}: cannot list {directory}: {exc}") from exc
        files = sorted(i.path for i in infos
                       if i.type == pafs.FileType.File and fnmatch.fnmatch(os.path.basename(i.path), base))
    else:
        info = filesystem.get_file_info(inner)
        files = [inner] if info.type == pafs.FileType.File else []
    if not files:
        raise InferError(f"{path}: no such file")
    return filesystem, files


def _text_lines(filesystem: pafs.FileSystem, path: str) -> Iterator[str]:
    """Lines of a (possibly compressed) text file, without their line breaks."""
    stream = filesystem.open_input_stream(path, compression="detect")
    with io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="") as handle:
        for line in handle:
            yield line.rstrip("\r\n")


def _csv_rows(filesystem, path: str, sample: Sample) -> Iterator[dict]:
    lines = _text_lines(filesystem, path)
    header_line = next(lines, None)
    if header_line is None or not header_line.strip():
        raise InferError(f"{path}: empty file (a CSV file needs a header line naming its columns)")
    header = [name.strip() for name in next(csv.reader([header_line]))]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise InferError(f"{path}: the header names column(s) {', '.join(duplicates)} more than once")
    for name in header:
        if name not in sample.columns:
            sample.columns.append(name)
    for line in lines:
        if not line.strip():
            continue
        try:
            fields = next(csv.reader([line], strict=True), [])
        except csv.Error:
            sample.unparsed_lines += 1
            continue
        if len(fields) != len(header):
            sample.unparsed_lines += 1
            continue
        yield dict(zip(header, fields))


def _jsonl_rows(filesystem, path: str, sample: Sample) -> Iterator[dict]:
    for line in _text_lines(filesystem, path):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            sample.unparsed_lines += 1
            continue
        if not isinstance(values, dict):
            sample.unparsed_lines += 1
            continue
        for name in values:
            if name not in sample.columns:
                sample.columns.append(name)
        yield values


def _parquet_rows(filesystem, path: str, sample: Sample, max_rows: int) -> Iterator[dict]:
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        for name in parquet.schema_arrow.names:
            if name not in sample.columns:
                sample.columns.append(name)
        for batch in parquet.iter_batches(batch_size=min(max_rows, 8192)):
            yield from batch.to_pylist()


def read_sample(path: str, max_rows: int = SAMPLE_ROWS, input_format: str | None = None) -> Sample:
    """Reads at most ``max_rows`` rows of a file or glob, streaming.

    Args:
        path: str. A local path, a glob (``logs/part-*.parquet``) or a URI pyarrow can open.
        max_rows: int. Rows to read at most.
        input_format: str or None. ``csv``, ``parquet`` or ``jsonl``; None: from the extension.

    Raises:
        InferError: unsupported format, no such file, an empty file or no rows at all.
    """
    if max_rows < 1:
        raise InferError(f"max_rows must be >= 1, got {max_rows}")
    fmt = input_format or input_format_of(path)
    if fmt not in INFER_FORMATS:
        raise InferError(f"{path}: unsupported format {fmt!r}; expected one of {', '.join(INFER_FORMATS)}")
    filesystem, files = match_files(path)
    sample = Sample(path=path, files=[], input_format=fmt, columns=[], rows=[])
    for file in files:
        sample.files.append(file)
        if fmt == "csv":
            rows = _csv_rows(filesystem, file, sample)
        elif fmt == "jsonl":
            rows = _jsonl_rows(filesystem, file, sample)
        else:
            rows = _parquet_rows(filesystem, file, sample, max_rows)
        for row in rows:
            if len(sample.rows) >= max_rows:
                return sample
            sample.rows.append(row)
    sample.exhausted = True
    if not sample.rows:
        where = files[0] if len(files) == 1 else f"{path} ({len(files)} files)"
        raise InferError(f"{where}: empty file: no data rows" + (
            f" ({sample.unparsed_lines} line(s) did not parse)" if sample.unparsed_lines else ""))
    return sample


# --------------------------------------------------------------------------------------------
# Profiling columns


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _value_kind(value: Any) -> str:
    """``int``, ``float``, ``nonfinite``, ``string``, ``bool``, ``datetime`` or ``nested``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "nonfinite"
    if isinstance(value, (datetime.datetime, datetime.date)):
        return "datetime"
    if isinstance(value, (list, tuple, dict)):
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


def _as_number(value: Any) -> float:
    """A present value of a numeric column as float (NaN when it does not parse)."""
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        return math.nan
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _as_category(value: Any, dtype: str) -> Any:
    """A present value as the pipeline would type it: str for strings, int for ints."""
    if dtype == "string":
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    number = _as_number(value)
    return int(number) if math.isfinite(number) and number.is_integer() else None


@dataclass
class ColumnProfile:
    """What a sample says about one column.

    Args:
        name: str. Column name.
        dtype: str or None. ``int``, ``float`` or ``string``; None for columns the spec cannot
            declare (lists, booleans, datetimes).
        kinds: Counter of value kinds (see :func:`_value_kind`) over present values.
        rows: int. Rows in the sample.
        missing: int. Rows without a value.
        bad: int. Present values that do not parse as ``dtype`` (the pipeline rejects their rows).
        bad_example: one such value, for messages.
        counts: Counter ``{typed value: rows}`` for int and string columns.
        numbers: ``(rows,)`` float64 array for int and float columns, NaN where missing or bad.
        codes: ``(rows,)`` int64 array for int and string columns: each row's index into
            ``counts``, -1 where missing or bad.
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


def _column_dtype(kinds: collections.Counter, present: int) -> str | None:
    if not present:
        return None
    top = kinds.most_common(1)[0][0]
    if top in ("nested", "bool", "datetime"):
        return None
    numeric = kinds["int"] + kinds["float"] + kinds["nonfinite"]
    if numeric >= TYPE_SHARE * present:
        return "int" if kinds["float"] == 0 and kinds["nonfinite"] == 0 else "float"
    return "string"


def profile_column(name: str, values: Sequence[Any]) -> ColumnProfile:
    """Profiles one column's sampled values (missing values as None or blank strings)."""
    present = [v for v in values if not _is_missing(v)]
    value_kinds = [_value_kind(v) for v in present]
    kinds = collections.Counter(value_kinds)
    dtype = _column_dtype(kinds, len(present))
    profile = ColumnProfile(name=name, dtype=dtype, kinds=kinds, rows=len(values), missing=len(values) - len(present))
    if dtype is None:
        return profile
    good_kinds = {"string": ("string", "int"), "int": ("int",), "float": ("int", "float")}[dtype]
    # the pipeline types Parquet/JSON ints as their text in string columns, but not floats
    bad = [v for v, kind in zip(present, value_kinds)
           if kind not in good_kinds and not (dtype == "string" and isinstance(v, str))]
    profile.bad, profile.bad_example = len(bad), (bad[0] if bad else None)
    if dtype in ("int", "float"):
        profile.numbers = np.array([math.nan if _is_missing(v) else _as_number(v) for v in values], dtype=np.float64)
    if dtype in ("int", "string"):
        categories = [None if _is_missing(v) else _as_category(v, dtype) for v in values]
        profile.counts = collections.Counter(c for c in categories if c is not None)
        index = {category: i for i, category in enumerate(profile.counts)}
        profile.codes = np.array([-1 if c is None else index[c] for c in categories], dtype=np.int64)
    return profile


# --------------------------------------------------------------------------------------------
# Decisions


@dataclass
class ColumnChoice:
    """What the spec does with one column, and why.

    Args:
        name: str. Column name.
        dtype: str or None. The inferred type (see :class:`ColumnProfile`).
        role: str. ``feature``, ``bias``, ``label``, ``group`` (the ``group_by`` column) or
            ``excluded`` (an excluded row id may still be declared under ``columns`` as the split key).
        reason: str. The explanation written as the YAML comment.
        entry: dict. The spec entry (under ``features`` or ``columns``); empty when excluded.
        flag: str. Why an excluded column is out: ``id``, ``timestamp``, ``leak``, ``constant``,
            ``empty``, ``unsupported`` or ``name``; empty otherwise.
    """

    name: str
    dtype: str | None
    role: str
    reason: str
    entry: dict = field(default_factory=dict)
    flag: str = ""


def embedding_dim(cardinality: int) -> int:
    """``round(6 * cardinality ** 0.25)``, at least 2, at most :data:`EMBEDDING_MAX_DIM` and the cardinality."""
    width = int(round(6 * max(cardinality, 1) ** 0.25))
    return max(2, min(width, EMBEDDING_MAX_DIM, max(cardinality, 2)))


def _moments(values: np.ndarray) -> tuple[float, float]:
    """(skewness, excess kurtosis) of ``values``; (0, 0) for a constant array."""
    centered = values - values.mean()
    std = centered.std()
    if std == 0 or values.size < 3:
        return 0.0, 0.0
    return float(np.mean(centered**3) / std**3), float(np.mean(centered**4) / std**4 - 3.0)


def _looks_like_timestamp(profile: ColumnProfile) -> bool:
    if profile.dtype == "string":
        sampled = [v for v in list(profile.counts)[:200]]
        if len(sampled) < 2:
            return False
        parsed = 0
        for value in sampled:
            try:
                datetime.datetime.fromisoformat(str(value))
                parsed += 1
            except ValueError:
                pass
        return parsed >= TYPE_SHARE * len(sampled) and any(not str(v).isdigit() for v in sampled)
    if profile.dtype != "int":
        return False
    values = profile.valid_numbers
    if values.size == 0:
        return False
    low, high = values.min(), values.max()
    in_range = any(lo <= low and high <= hi for lo, hi in (EPOCH_SECONDS, EPOCH_MILLIS))
    return in_range and (bool(_TIME_NAME.search(profile.name.lower())) or profile.distinct >= 10)


def _looks_like_id(profile: ColumnProfile) -> bool:
    return (profile.dtype in ("int", "string") and profile.present >= ID_MIN_ROWS
            and profile.distinct >= ID_UNIQUE_SHARE * profile.present)


def _looks_like_code(profile: ColumnProfile) -> bool:
    """An int column of codes (few values in a narrow range, or a name such as ``*_id``/``*_code``)."""
    if _CODE_NAME.search(profile.name.lower()):
        return True
    values = profile.valid_numbers
    if profile.distinct <= CODE_MAX_DISTINCT_ANY_RANGE:
        return True
    # label-encoded codes start at 0 or 1 and fill a narrow range (hour 0..23; not age 18..80)
    return (profile.distinct <= VOCABULARY_MAX_INT_DISTINCT and float(values.min()) <= 1
            and float(values.max() - values.min()) < CODE_MAX_SPAN)


def _target_encoding(profile: ColumnProfile, label: ColumnProfile) -> np.ndarray:
    """``(rows,)`` leave-one-out mean label of each row's category (NaN where missing or alone).

    A column whose encoding correlates almost perfectly with the label names the label in other
    words (``marital_stat`` for ``never_married``); leaving the row out keeps rare values from
    looking perfect.
    """
    codes, labels = profile.codes, label.numbers
    known = (codes >= 0) & np.isfinite(labels)
    size = len(profile.counts)
    sums = np.bincount(codes[known], weights=labels[known], minlength=size)
    counts = np.bincount(codes[known], minlength=size)
    encoded = np.full(codes.shape, math.nan)
    shared = known & (counts[np.maximum(codes, 0)] > 1)
    encoded[shared] = (sums[codes[shared]] - labels[shared]) / (counts[codes[shared]] - 1)
    return encoded


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """|Pearson correlation| over rows where both are finite; 0 when either is constant there."""
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        return 0.0
    x, y = a[both], b[both]
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(abs(np.corrcoef(x, y)[0, 1]))


@dataclass(frozen=True)
class LabelPlan:
    """A task as inferred: name, label column, kind, loss, label transform and mask."""

    task: str
    column: str
    kind: str
    label_transform: str = "none"
    mask: str | None = None
    reason: str = ""


def _only_where(label: ColumnProfile, click: ColumnProfile) -> bool:
    """The label is non-zero (or missing) only in rows where ``click`` is 1, and non-zero somewhere."""
    unclicked = click.numbers != 1
    outside = np.nan_to_num(label.numbers[unclicked], nan=0.0)
    return bool(np.all(outside == 0) and np.any(np.nan_to_num(label.numbers, nan=0.0) != 0))


def _plan_label(task: str, column: str, profile: ColumnProfile, first: LabelPlan | None,
                first_profile: ColumnProfile | None) -> LabelPlan:
    """Infers one task from its label column.

    Raises:
        InferError: text labels, a first (click-like) label that is not 0/1, or two values that
            are not 0/1.
    """
    if profile.dtype not in ("int", "float"):
        held = (f"e.g. {next(iter(profile.counts))!r}" if profile.counts
                else f"{profile.kinds.most_common(1)[0][0]} values" if profile.kinds else "no values")
        raise InferError(
            f"label column {column!r} of task {task!r} does not hold numbers ({held}); "
            "labels must be 0/1 for binary tasks or numbers for regression")
    values = profile.valid_numbers
    distinct = sorted(set(values.tolist()))
    shown = ", ".join(f"{v:g}" for v in distinct[:6]) + (", ..." if len(distinct) > 6 else "")
    if set(distinct) <= {0.0, 1.0}:
        rate = float(values.mean()) if values.size else 0.0
        why = f"task {task}: {column} is 0/1 (positive rate {rate:.1%} in the sample): binary, binary_crossentropy"
        if first_profile is not None and _only_where(profile, first_profile) and rate > 0:
            why += (f"; 1 only where {first.column} is 1 (a post-click outcome), but a 0 elsewhere is observed, "
                    f"so it is learned on every impression (the probability of {first.column} and {column}), not masked")
        return LabelPlan(task, column, "binary", reason=why)
    if first is None:
        raise InferError(
            f"label column {column!r} of task {task!r} is not binary: a binary label must be 0/1, "
            f"found {shown}. The first --label is the click-like task the ranking builds on; recode it as 0/1")
    if len(distinct) == 2:
        raise InferError(
            f"label column {column!r} of task {task!r} has two values ({shown}) but a binary label must be 0/1; "
            "recode it as 0/1")
    skew, _ = _moments(values)
    transform = "log1p" if values.min() >= 0 and skew > SKEW_LOG1P else "none"
    mask = None
    if first_profile is not None and values.min() >= 0 and _only_where(profile, first_profile):
        mask = first.column
    why = [f"task {task}: {column} takes {len(distinct)} values in [{values.min():g}, {values.max():g}]: regression, mse"]
    if transform == "log1p":
        why.append(f"non-negative and right-skewed (skewness {skew:.1f}): learned as log1p, reported in original units")
    if mask:
        why.append(f"non-zero only where {mask} is 1, so observed only there: masked by {mask}")
    return LabelPlan(task, column, "regression", transform, mask, "; ".join(why))


def _categorical_entry(profile: ColumnProfile) -> tuple[dict, str]:
    """A vocabulary or hashing feature entry and its explanation."""
    distinct = profile.distinct
    singletons = sum(1 for c in profile.counts.values() if c == 1)
    singleton_share = singletons / distinct if distinct else 0.0
    if distinct > VOCABULARY_MAX_DISTINCT or (distinct > 100 and singleton_share > 0.5):
        bins = min(HASHING_MAX_BINS, 1 << max(1, math.ceil(math.log2(4 * distinct))))
        dim = embedding_dim(distinct)
        return (dict(transform="hashing", num_bins=bins, embedding_dim=dim),
                f"{distinct:,} distinct values in {profile.present:,} rows ({singleton_share:.0%} seen once): too many "
                f"to list, so hashing into {bins:,} bins (about 4x the values seen); "
                f"embedding {dim} = 6 * {distinct}^0.25, capped")
    min_count = 2 if distinct > 50 and singleton_share > 0.2 else 1
    top_k = min(10_000, max(16, 2 * distinct))
    dim = embedding_dim(distinct)
    why = (f"{distinct:,} distinct values: vocabulary of at most {top_k} (2x the values seen, room for new ones)"
           + (f", values seen once in the train split out ({singleton_share:.0%} of values are singletons)"
              if min_count > 1 else "")
           + f"; embedding {dim} = 6 * {distinct}^0.25" + (", capped" if dim in (EMBEDDING_MAX_DIM, distinct) else ""))
    return dict(transform="vocabulary", top_k=top_k, min_count=min_count, embedding_dim=dim), why


def _numeric_entry(profile: ColumnProfile) -> tuple[dict, str]:
    """A zscore, log1p or quantile feature entry and its explanation."""
    values = profile.valid_numbers
    low, high = float(values.min()), float(values.max())
    skew, kurtosis = _moments(values)
    if low >= 0 and skew > SKEW_LOG1P:
        _, log_kurtosis = _moments(np.log1p(values))
        if log_kurtosis > HEAVY_TAIL_KURTOSIS:
            return _quantile_entry(profile, f"non-negative, skewness {skew:.1f}, and still heavy-tailed after log1p "
                                            f"(kurtosis {log_kurtosis:.0f})")
        return (dict(transform="log1p", min=0),
                f"non-negative (range [{low:g}, {high:g}]) and right-skewed (skewness {skew:.1f}): log1p, then z-score; "
                "min 0 keeps log1p defined")
    if kurtosis > HEAVY_TAIL_KURTOSIS:
        return _quantile_entry(profile, f"heavy tails (excess kurtosis {kurtosis:.0f}, range [{low:g}, {high:g}])")
    return (dict(transform="zscore"),
            f"range [{low:g}, {high:g}], skewness {skew:.1f}: z-score with the train split's mean and variance")


def _quantile_entry(profile: ColumnProfile, why: str) -> tuple[dict, str]:
    buckets = max(2, min(QUANTILE_BUCKETS, profile.distinct))
    dim = embedding_dim(buckets)
    return (dict(transform="quantile", num_buckets=buckets, embedding_dim=dim),
            f"{why}: {buckets} quantile buckets of the train split, embedded in {dim}")


def _missing_entry(profile: ColumnProfile) -> tuple[dict, str]:
    """``required: false`` and a default for a column with gaps; empty when it has none."""
    if not profile.missing:
        return {}, ""
    share = profile.missing / profile.rows
    if profile.dtype == "string":
        default: Any = MISSING_STRING
        said = f"the marker {MISSING_STRING}"
    elif profile.dtype == "int":
        default = int(np.median(profile.valid_numbers))
        said = f"the median {default}"
    else:
        default = float(f"{np.median(profile.valid_numbers):.6g}")
        said = f"the median {default:g}"
    return dict(required=False, default=default), f"; {share:.1%} missing in the sample, filled with {said}"


def _exclusion(profile: ColumnProfile, labels: Mapping[str, ColumnProfile]) -> tuple[str, str] | None:
    """(flag, reason) when a column should not be a feature; None when it should."""
    name = profile.name
    if not name.isidentifier():
        return "name", f"the name {name!r} is not an identifier (letters, digits, _): rename the column to use it"
    if profile.dtype is None:
        kind = profile.kinds.most_common(1)[0][0] if profile.kinds else "no value"
        if not profile.present:
            return "empty", "no value in the sample"
        hint = {"bool": "write booleans as 0/1", "nested": "lists and objects are not supported",
                "datetime": "a timestamp; declare it under columns as type timestamp for a timestamp split"}.get(kind, "")
        flag = "timestamp" if kind == "datetime" else "unsupported"
        return flag, f"holds {kind} values: {hint}"
    if profile.missing > MOSTLY_MISSING_SHARE * profile.rows:
        return "empty", f"{profile.missing / profile.rows:.0%} of the sampled rows have no value"
    if _looks_like_timestamp(profile):
        return "timestamp", ("looks like a timestamp: not a model feature (a split on it would be method: timestamp, "
                             "declared under columns with type timestamp)")
    if profile.distinct <= 1:
        value = next(iter(profile.counts)) if profile.counts else f"{profile.valid_numbers[0]:g}"
        return "constant", f"the same value in every sampled row ({value}): carries no signal"
    if _looks_like_id(profile):
        return "id", (f"looks like a row id ({profile.distinct:,} distinct values in {profile.present:,} rows): "
                      "memorizes rows, generalizes to none")
    return _leak(profile, labels)


def _leak(profile: ColumnProfile, labels: Mapping[str, ColumnProfile]) -> tuple[str, str] | None:
    """("leak", reason) when the column predicts a label almost perfectly: as a number, as
    "non-zero" (a dwell time for a click), or through its categories (leave-one-out encoding)."""
    categorical = profile.dtype == "string" or (profile.dtype == "int" and _looks_like_code(profile))
    for label_name, label in labels.items():
        series = []
        if profile.numbers is not None:
            nonzero = np.where(np.isfinite(profile.numbers), (profile.numbers != 0).astype(float), np.nan)
            series += [("value", profile.numbers), ("non-zero", nonzero)]
        if categorical and profile.distinct <= VOCABULARY_MAX_DISTINCT:
            series.append(("category", _target_encoding(profile, label)))
        for how, values in series:
            strength = _correlation(values, label.numbers)
            if strength >= LEAK_CORRELATION:
                return "leak", (f"its {how} correlates {strength:.3f} with the label {label_name}: "
                                "a leaked label, known only after the fact")
    return None


def _feature_choice(profile: ColumnProfile) -> ColumnChoice:
    """The feature entry for a column that passed :func:`_exclusion`."""
    dtype = profile.dtype
    treat_as_code = dtype == "string" or (dtype == "int" and _looks_like_code(profile))
    if treat_as_code:
        entry, why = _categorical_entry(profile)
        kind = "text" if dtype == "string" else "integer codes"
        why = f"{kind}; {why}"
    else:
        entry, why = _numeric_entry(profile)
    missing_entry, missing_why = _missing_entry(profile)
    if profile.bad:
        missing_why += (f"; {profile.bad} sampled value(s) are not {dtype} (e.g. {profile.bad_example!r}): "
                        "the pipeline rejects those rows")
    role = "feature"
    full = {"name": profile.name, "type": dtype, **entry, **missing_entry}
    if _POSITION_NAME.match(profile.name.lower()) and dtype == "int" and entry.get("transform") == "vocabulary":
        serving = int(profile.valid_numbers.min())
        full.update(role="bias", serving_value=serving)
        role = "bias"
        why += (f"; a display position: learned by the shallow bias tower in training and fixed to {serving} "
                "(the top slot) at serving, so rankings ignore where items were logged")
    return ColumnChoice(profile.name, dtype, role, why + missing_why, full)


def _label_entry(plan: LabelPlan, profile: ColumnProfile, click: ColumnProfile | None) -> dict:
    """The ``columns`` entry of a label column (bounds that the pipeline checks)."""
    entry: dict = {"name": plan.column, "type": profile.dtype}
    if plan.kind == "binary":
        entry.update(min=0, max=1)
    elif profile.valid_numbers.min() >= 0:
        entry["min"] = 0
    if profile.missing and plan.mask and click is not None:
        unclicked = click.numbers != 1
        if np.all(unclicked[~np.isfinite(profile.numbers)]):
            entry.update(required=False, default=0 if profile.dtype == "int" else 0.0)
    return entry


# --------------------------------------------------------------------------------------------
# The spec


@dataclass
class InferredSpec:
    """A proposed spec.

    Args:
        yaml: str. The spec as YAML text with a comment on every choice.
        spec: FeatureSpec. The same spec, loaded and validated.
        choices: list of ColumnChoice, one per sampled column, in file order.
        tasks: list of LabelPlan, in the order given.
        sample_rows: int. Rows the inference read.
    """

    yaml: str
    spec: FeatureSpec
    choices: list[ColumnChoice]
    tasks: list[LabelPlan]
    sample_rows: int

    def choice(self, name: str) -> ColumnChoice:
        for choice in self.choices:
            if choice.name == name:
                return choice
        raise KeyError(name)


def _spec_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for _ in range(3):
        base, ext = os.path.splitext(base)
        if not ext:
            break
    name = re.sub(r"[^a-z0-9_]+", "_", base.lower().replace("*", "")).strip("_")
    return name if name and not name[0].isdigit() else f"log_{name}" if name else "my_log"


def _did_you_mean(name: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_request(sample: Sample, labels: Mapping[str, str], group_by: str | None) -> None:
    """Raises InferError naming a label or group column that the file lacks, or a clash."""
    if not labels:
        raise InferError("name at least one label: --label click=COLUMN (columns: " + ", ".join(sample.columns) + ")")
    where = sample.files[0] if len(sample.files) == 1 else sample.path
    for task, column in labels.items():
        if not task.isidentifier():
            raise InferError(f"task name {task!r} must be an identifier (letters, digits, _)")
        if column not in sample.columns:
            raise InferError(f"label column {column!r} of task {task!r} is not in {where}"
                             f"{_did_you_mean(column, sample.columns)}; its columns are: " + ", ".join(sample.columns))
        if not column.isidentifier():
            raise InferError(f"label column {column!r} must be an identifier (letters, digits, _) to be declared; rename it")
    duplicated = sorted({c for c in labels.values() if list(labels.values()).count(c) > 1})
    if duplicated:
        raise InferError(f"label column {duplicated[0]!r} is given for more than one task")
    if group_by is not None:
        if group_by not in sample.columns:
            raise InferError(f"group-by column {group_by!r} is not in {where}{_did_you_mean(group_by, sample.columns)}; "
                             "its columns are: " + ", ".join(sample.columns))
        if group_by in labels.values():
            raise InferError(f"group-by column {group_by!r} is a label")
        if not group_by.isidentifier():
            raise InferError(f"group-by column {group_by!r} must be an identifier (letters, digits, _); rename it")


def _ranking_and_split(plans: list[LabelPlan], group_by: str | None, choices: list[ColumnChoice],
                       profiles: Mapping[str, ColumnProfile]) -> tuple[dict, dict, str, str]:
    """The ranking and split sections and a comment for each."""
    first = plans[0]
    regressions = [p for p in plans if p.kind == "regression"]
    if regressions:
        weights = {first.task: 1.0, **{p.task: 1.0 for p in regressions}}
        ranking = {"group_by": group_by, "kind": "product", "weights": weights}
        ranking_why = (f"score = {first.task} probability x predicted " + " x ".join(p.task for p in regressions)
                       + ": the expected engagement of an impression")
    else:
        weights = {p.task: 1.0 for p in plans}
        ranking = {"group_by": group_by, "kind": "weighted_sum", "weights": weights}
        ranking_why = ("score = " + " + ".join(f"{p.task} probability" for p in plans)
                       + (" (weights are a product decision: raise a rarer task's weight to rank by it more)"
                          if len(plans) > 1 else ""))
    if group_by is None:
        ranking.pop("group_by")
        ranking_why += "; no group_by: without a request id, per-request NDCG is not computed"
    if group_by is not None:
        key, split_why = group_by, f"hash of {group_by}: all candidates of one request land in the same split"
    else:
        ids = [c.name for c in choices if c.flag == "id" and profiles[c.name].dtype in ("int", "string")]
        if ids:
            key, split_why = ids[0], f"hash of the row id {ids[0]}: a random 20% of rows for evaluation"
        else:
            features = [c for c in choices if c.role == "feature" and profiles[c.name].counts]
            if not features:
                features = [c for c in choices if c.role == "feature"]
            best = max(features, key=lambda c: profiles[c.name].distinct)
            key = best.name
            split_why = (f"no group or row id: hash of {key}, the most varied feature ({profiles[key].distinct:,} values); "
                         "rows sharing a value stay together")
    split = {"method": "hash", "key": key, "eval_fraction": 0.2, "seed": 1}
    return ranking, split, ranking_why, split_why


def _flow_scalar(value: Any) -> str:
    """One YAML scalar that PyYAML reads back as the same value and type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(float(f"{value:.6g}"))
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _flow(mapping: Mapping[str, Any]) -> str:
    parts = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            parts.append(f"{key}: {_flow(value)}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{key}: [{', '.join(_flow_scalar(v) for v in value)}]")
        else:
            parts.append(f"{key}: {_flow_scalar(value)}")
    return "{" + ", ".join(parts) + "}"


def _comment(text: str, indent: str = "") -> str:
    """``text`` as YAML comment lines of at most about 100 characters."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > 96:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(f"{indent}# {l}" for l in lines)


def _model_sections(sample: Sample, has_bias: bool, tasks: int) -> tuple[dict, dict, str]:
    rows = len(sample.rows)
    small = sample.exhausted and rows < 10_000
    model = {"architecture": "mmoe", "num_experts": 4 if small else 8, "expert_units": [32 if small else 64],
             "tower_units": [16 if small else 32]}
    if has_bias:
        model["bias_tower_units"] = [8]
    batch = 512 if rows >= 20_000 or not sample.exhausted else 128 if rows >= 2_000 else 32
    training = {"batch_size": batch, "epochs": 5 if small else 3, "learning_rate": 0.002, "shuffle_buffer": 10_000,
                "seed": 42}
    size = f"the whole data set has {rows:,} rows" if sample.exhausted else f"the sample holds the first {rows:,} rows"
    why = (f"{size}: " + ("a small model (4 experts), small batches and a few more epochs" if small
                          else "the default MMoE size (8 experts of 64 units), batches of 512")
           + f"; one gate and one tower per task ({tasks} task{'s' if tasks > 1 else ''}). "
           "`mmoe train --epochs N --model ARCH` overrides without editing")
    return model, training, why


def _render(name: str, sample: Sample, choices: list[ColumnChoice], plans: list[LabelPlan],
            label_entries: list[dict], ranking: dict, split: dict, ranking_why: str, split_why: str,
            model: dict, training: dict, model_why: str, declared_extra: list[dict]) -> str:
    """The YAML text of the spec, a comment above every entry."""
    files = sample.files[0] if len(sample.files) == 1 else f"{sample.path} ({len(sample.files)} files)"
    rows = f"all {len(sample.rows):,} rows" if sample.exhausted else f"the first {len(sample.rows):,} rows"
    out = [
        f"# Proposed by `mmoe spec infer` from {rows} of {files}.",
        "# Every choice is explained in the comment above it; check them, then run:",
        f"#   mmoe run --spec <this file> --input '{sample.path}'",
        f"name: {_flow_scalar(name)}",
        "description: " + json.dumps(f"Inferred from {os.path.basename(sample.path)}: tasks "
                                     + ", ".join(p.task for p in plans)),
        "",
        "features:",
    ]
    for choice in choices:
        if choice.role in ("feature", "bias"):
            out.append(_comment(f"{choice.name}: {choice.reason}", "  "))
            out.append(f"  - {_flow(choice.entry)}")
    excluded = [c for c in choices if c.role == "excluded"]
    if excluded:
        out.append("")
        out.append("# Left out (undeclared columns are ignored by the pipeline and counted in report.json):")
        for choice in excluded:
            out.append(_comment(f"{choice.name} ({choice.dtype or 'no type'}, {choice.flag}): {choice.reason}"))
    out += ["", "columns:"]
    for entry in declared_extra:
        out.append(_comment(entry.pop("_why"), "  "))
        out.append(f"  - {_flow(entry)}")
    for plan, entry in zip(plans, label_entries):
        bounds = ("min 0, max 1: validation rejects rows with any other value" if plan.kind == "binary"
                  else "min 0: validation rejects negative values" if entry.get("min") == 0 else "no bounds")
        optional = ("; missing only where not observed (the mask is 0): filled with 0"
                    if entry.get("required") is False else "")
        out.append(_comment(f"{plan.column}: label of task {plan.task}; {bounds}{optional}", "  "))
        out.append(f"  - {_flow(entry)}")
    out += ["", "tasks:"]
    for plan in plans:
        task = {"name": plan.task, "label": plan.column, "kind": plan.kind,
                "loss": "binary_crossentropy" if plan.kind == "binary" else "mse", "weight": 1.0}
        if plan.label_transform != "none":
            task["label_transform"] = plan.label_transform
        if plan.mask:
            task["mask"] = plan.mask
        if plan.kind == "regression" and plan.column.endswith(("_seconds", "_secs")):
            task["unit"] = "seconds"
        out.append(_comment(plan.reason + "; loss weight 1.0 (raise it to favour this task)", "  "))
        out.append(f"  - {_flow(task)}")
    out += ["", _comment(ranking_why), f"ranking: {_flow(ranking)}", "",
            _comment(split_why + "; 20% of keys to eval, seeded"), f"split: {_flow(split)}", "",
            _comment(model_why), f"model: {_flow(model)}", f"training: {_flow(training)}", ""]
    return "\n".join(out)


def infer_spec(path: str, labels: Mapping[str, str], group_by: str | None = None, max_rows: int = SAMPLE_ROWS,
               name: str | None = None, input_format: str | None = None) -> InferredSpec:
    """Proposes a complete spec for a CSV, Parquet or JSONL log.

    Args:
        path: str. File, glob pattern or URI of the log.
        labels: mapping task name -> label column, in task order; the first is the click-like
            binary (0/1) task, e.g. ``{"click": "clicked", "engagement": "dwell_seconds"}``.
        group_by: str or None. Request id column: the ranking group and the split key.
        max_rows: int. Rows sampled at most (streamed from the start of the files).
        name: str or None. Spec name (also the served model's name); default from the file name.
        input_format: str or None. ``csv``, ``parquet`` or ``jsonl``; default from the extension.

    Returns:
        InferredSpec: the YAML text, the loaded spec and the per-column decisions.

    Raises:
        InferError: unsupported format, missing or empty file, a label or group column the file
            lacks (the message lists the columns), a first label that is not 0/1.
    """
    sample = read_sample(path, max_rows, input_format)
    _check_request(sample, labels, group_by)
    profiles = {c: profile_column(c, [row.get(c) for row in sample.rows]) for c in sample.columns}
    plans: list[LabelPlan] = []
    for task, column in labels.items():
        first = plans[0] if plans else None
        plans.append(_plan_label(task, column, profiles[column], first, profiles[first.column] if first else None))
    label_profiles = {p.column: profiles[p.column] for p in plans}
    choices, declared_extra = [], []
    for column in sample.columns:
        profile = profiles[column]
        if column in label_profiles:
            choices.append(ColumnChoice(column, profile.dtype, "label", "a task label"))
            continue
        if column == group_by:
            choices.append(ColumnChoice(column, profile.dtype, "group", "the ranking group"))
            declared_extra.append({"_why": f"{column}: the request id given by --group-by ({profile.distinct:,} groups in "
                                           f"the sample): ranking group and split key",
                                   "name": column, "type": profile.dtype or "string"})
            continue
        excluded = _exclusion(profile, label_profiles)
        if excluded:
            flag, reason = excluded
            choices.append(ColumnChoice(column, profile.dtype, "excluded", reason, flag=flag))
        else:
            choices.append(_feature_choice(profile))
    if not any(c.role == "feature" for c in choices):
        raise InferError(f"{sample.path}: no column is usable as a feature: "
                         + "; ".join(f"{c.name}: {c.reason}" for c in choices if c.role == "excluded"))
    ranking, split, ranking_why, split_why = _ranking_and_split(plans, group_by, choices, profiles)
    if split["key"] != group_by and not any(c.name == split["key"] and c.role in ("feature", "bias") for c in choices):
        key_profile = profiles[split["key"]]
        declared_extra.append({"_why": f"{split['key']}: the split key", "name": split["key"], "type": key_profile.dtype})
    label_entries = [_label_entry(p, profiles[p.column], profiles[plans[0].column]) for p in plans]
    model, training, model_why = _model_sections(sample, any(c.role == "bias" for c in choices), len(plans))
    text = _render(name or _spec_name(path), sample, choices, plans, label_entries, ranking, split, ranking_why,
                   split_why, model, training, model_why, declared_extra)
    spec = spec_from_dict(yaml.safe_load(text), source="<inferred spec>")
    return InferredSpec(yaml=text, spec=spec, choices=choices, tasks=plans, sample_rows=len(sample.rows))
