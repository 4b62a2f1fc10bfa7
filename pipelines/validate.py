"""Validation: every raw row is checked against the spec's columns, typed, or rejected.

Checks run column by column in the spec's order (features first); the first failure rejects the
row with one reason: ``missing`` (no value in a required column), ``wrong_type`` (not parseable as
the column's type), ``not_finite`` (NaN or infinity in a float column), ``out_of_range`` (outside
the column's ``min``/``max``, the int64/float32 range of tf.Example, or log1p's domain for log1p
features and labels) or ``too_long`` (a list longer than its ``max_length`` under
``list.too_long: reject``). A list column's missing value is the empty list, never a rejection;
each element is checked (:func:`feature_specs.values.typed_list`). A line that did not parse is rejected as ``unparseable_line``; with the
spec's ``pipeline.unknown_columns: reject``, a row carrying a column the spec does not declare is
rejected as ``unknown_column`` (with ``ignore``, the default, such columns are dropped and counted).
Rejected rows keep their raw row unchanged.

While it checks, validation also fills the data-quality :class:`~pipelines.quality.Profile`
(missing values, unknown columns, ranges and distinct values of valid rows, and in reuse mode the
values outside the reused artifacts), emitted once per bundle on the ``profile`` output.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from apache_beam.transforms.window import GlobalWindows

from feature_specs.spec import Column, FeatureSpec
from feature_specs.values import InvalidValue, is_missing, typed_value
from pipelines.quality import Profile
from pipelines.records import (MISSING, REASONS, UNKNOWN_COLUMN, UNPARSEABLE_LINE, RawRecord,
                               Rejection)

VALID = "valid"
REJECTED = "rejected"
PROFILE = "profile"


def check_record(record: RawRecord, columns: Sequence[Column],
                 log1p_names: frozenset[str] = frozenset(),
                 known_names: frozenset[str] | None = None) -> dict | Rejection:
    """Validates one raw record.

    Args:
        record: RawRecord. The row as read.
        columns: the spec's columns (``spec.all_columns``).
        log1p_names: names of columns that go through log1p downstream (see
            :func:`log1p_columns`).
        known_names: when given, a row with any other column is rejected as ``unknown_column``
            (the policy ``reject``); when None, other columns are ignored.

    Returns:
        ``{column name: typed value}`` with exactly ``columns`` (missing optional values filled
        with their defaults), or a :class:`Rejection` for the first failed check.
    """
    if record.values is None:
        return Rejection(record.source, record.row, UNPARSEABLE_LINE, None,
                         record.error or "line could not be parsed")
    values: Mapping[str, Any] = record.values
    if known_names is not None:
        unknown = values.keys() - known_names
        if unknown:
            names = sorted(unknown)
            return Rejection(record.source, record.row, UNKNOWN_COLUMN, names[0],
                             f"{names[0]}: column is not declared in the spec "
                             f"(unknown: {', '.join(names)}; pipeline.unknown_columns is reject)")
    row = {}
    for column in columns:
        raw = values.get(column.name)
        if column.list is None and is_missing(raw):
            if column.required:
                what = ("absent (no such column)" if column.name not in values
                        else "null" if raw is None else f"empty ({raw!r})")
                return Rejection(record.source, record.row, MISSING, column.name,
                                 f"{column.name}: required value is {what}")
            row[column.name] = column.default
            continue
        try:
            row[column.name] = typed_value(column, raw, column.name in log1p_names)
        except InvalidValue as invalid:
            return Rejection(record.source, record.row, invalid.reason, column.name, invalid.message)
    return row


def log1p_columns(spec: FeatureSpec) -> frozenset[str]:
    """Columns whose values go through log1p downstream: ``log1p`` features and log1p labels."""
    features = {f.name for f in spec.features if f.transform == "log1p"}
    labels = {t.label for t in spec.tasks if t.label_transform == "log1p"}
    return frozenset(features | labels)


def reference_checks(spec: FeatureSpec, vocabularies: Mapping[str, Sequence[str]] | None,
                     statistics) -> dict:
    """What reuse mode checks each valid row against: feature -> set of vocabulary values
    (compared as text, as the vocabulary file holds them) or (min, max) of a numeric feature."""
    if statistics is None:
        return {}
    checks = {}
    for feature in spec.features:
        if feature.history is not None:  # derived after validation: not counted
            continue
        if feature.transform == "vocabulary" and vocabularies is not None and feature.name in vocabularies:
            checks[feature.name] = frozenset(vocabularies[feature.name])
        elif feature.name in statistics.numeric and statistics.numeric[feature.name].count:
            stats = statistics.numeric[feature.name]
            checks[feature.name] = (stats.min, stats.max)
    return checks


def count_outside(row: Mapping[str, Any], checks: Mapping[str, Any], outside: dict[str, int]) -> None:
    """Adds 1 to ``outside[feature]`` for each feature whose value the reused artifacts do not cover
    (for a list feature, 1 per element its reused vocabulary lacks)."""
    for name, check in checks.items():
        value = row[name]
        if isinstance(value, list):
            missed = sum(1 for element in value if str(element) not in check)
            if missed:
                outside[name] = outside.get(name, 0) + missed
            continue
        if isinstance(check, tuple):
            if not check[0] <= value <= check[1]:
                outside[name] = outside.get(name, 0) + 1
        elif str(value) not in check:
            outside[name] = outside.get(name, 0) + 1


class _ValidateFn(beam.DoFn):
    """Emits typed rows on the main output, rejections on ``rejected``, one Profile per bundle
    on ``profile``."""

    def __init__(self, spec: FeatureSpec, reference: Mapping[str, Any] | None = None):
        self._columns = spec.logged_columns
        self._names = frozenset(c.name for c in self._columns)
        self._known = self._names if spec.pipeline.unknown_columns == "reject" else None
        self._numeric = tuple(c.name for c in self._columns if c.is_numeric)
        self._categorical = tuple(c.name for c in self._columns if c.dtype != "float" and not c.is_list)
        self._lists = tuple(c.name for c in self._columns if c.is_list)
        self._reference = dict(reference or {})
        self._log1p = log1p_columns(spec)
        self._valid = Metrics.counter("pipelines.validate", "valid_rows")
        self._rejected = {reason: Metrics.counter("pipelines.validate", f"rejected_{reason}")
                          for reason in REASONS}

    def start_bundle(self):
        self._profile = Profile()

    def _observe(self, values: Mapping[str, Any]) -> None:
        profile = self._profile
        profile.rows += 1
        for name in self._names:
            raw = values.get(name)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                profile.missing[name] = profile.missing.get(name, 0) + 1
        if len(values) > len(self._names) or not self._names.issuperset(values.keys()):
            for name in values.keys() - self._names:
                profile.unknown[name] = profile.unknown.get(name, 0) + 1

    def process(self, record):
        if record.values is not None:
            self._observe(record.values)
        result = check_record(record, self._columns, self._log1p, self._known)
        if isinstance(result, Rejection):
            self._rejected[result.reason].inc()
            yield beam.pvalue.TaggedOutput(REJECTED, result)
        else:
            self._valid.inc()
            self._profile.add_valid(result, self._numeric, self._categorical)
            self._profile.add_elements(result, self._lists)
            if self._reference:
                count_outside(result, self._reference, self._profile.outside)
            yield result

    def finish_bundle(self):
        yield beam.pvalue.TaggedOutput(PROFILE, GlobalWindows.windowed_value(self._profile))


class ValidateRows(beam.PTransform):
    """Checks and types raw records against a spec, with a dead-letter output.

    Args:
        spec: FeatureSpec. Its ``logged_columns`` are checked, in order; ``spec.pipeline`` says what
            to do with undeclared columns.
        reference: optional feature -> check from :func:`reference_checks` (reuse mode): valid
            values outside the reused artifacts are counted per feature in the profile.

    Returns (from ``expand``):
        A tuple of PCollections with tags ``valid`` (dicts ``{column: typed value}``),
        ``rejected`` (:class:`~pipelines.records.Rejection`) and ``profile`` (one
        :class:`~pipelines.quality.Profile` per bundle), e.g.
        ``result = records | 'Validate' >> ValidateRows(spec); result.valid, result.rejected``.
    """

    def __init__(self, spec: FeatureSpec, reference: Mapping[str, Any] | None = None):
        super().__init__()
        self._spec = spec
        self._reference = reference

    def expand(self, records):
        return records | "Check" >> beam.ParDo(_ValidateFn(self._spec, self._reference)).with_outputs(
            REJECTED, PROFILE, main=VALID)
