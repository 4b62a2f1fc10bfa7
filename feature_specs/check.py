"""Checks a spec, and a data set against it, before any pipeline starts (``mmoe spec check``).

:func:`check_spec` loads the spec (the loader names the key path of the first problem) and, given
data, reads a bounded sample of it and reports, naming each column: declared columns the file
lacks, values that do not parse as the declared type, empty required values and values outside
``min``/``max`` (each when more of the sampled rows fail than ``pipeline.max_reject_rate``, the
share at which a run fails), binary labels that are not 0/1, and undeclared columns when
``pipeline.unknown_columns`` is ``reject``; a side table's columns are looked up, so the log
may lack them, and each table with an ``input:`` is sampled and checked the same way
(:func:`check_tables`), its columns joined into the log's sample for the warnings. :func:`check_report` adds warnings that do not fail a
run: a declared feature that predicts a label almost perfectly on the sample, or behaves like
an outcome of the impression (:func:`predictor_warnings`, the judgements ``mmoe spec infer``
leaves such columns out by). Values are typed by ``feature_specs.values``, the
rules the pipeline's validation applies, and the sample is read by the sampler ``mmoe spec infer``
uses too (:mod:`feature_specs.sample`), with the pipeline's format rules. This module imports
neither Beam nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Sequence

from feature_specs.column_choices import leak
from feature_specs.outcomes import outcome_evidence
from feature_specs.profile import profile_column
from feature_specs.sample import SAMPLE_ROWS, InferError, Sample, read_sample
from feature_specs.spec import Column, FeatureSpec, SpecError
from feature_specs.spec_nodes import quoted
from feature_specs.spec_reader import load_spec
from feature_specs.values import OUT_OF_RANGE, InvalidValue, is_missing, typed_list, typed_value


@dataclass(frozen=True)
class Problem:
    """One reason the spec or the data would fail.

    Args:
        message: str. What is wrong, naming the key path or the column and the file.
        column: str or None. The column concerned, when there is one.
    """

    message: str
    column: str | None = None

    def __str__(self) -> str:
        return self.message


def typed(column: Column, value: Any) -> Any:
    """A present raw value typed as ``column`` declares it (str, int or float), ignoring its range;
    None when it does not parse, as the pipeline would reject it as ``wrong_type`` or ``not_finite``."""
    unbounded = dataclasses.replace(column, min=None, max=None)
    try:
        return typed_value(unbounded, value)
    except InvalidValue:  # wrong type, not finite, or outside int64/float32
        return None


@dataclass
class _ColumnCounts:
    """Sampled rows where a column fails each check, with one example value."""

    missing: int = 0
    wrong_type: int = 0
    out_of_range: int = 0
    example_type: Any = None
    example_range: Any = None


def _count_failures(column: Column, rows: Sequence[dict], failing_rows: set[int]) -> _ColumnCounts:
    counts = _ColumnCounts()
    for index, row in enumerate(rows):
        raw = row.get(column.name)
        if column.list is not None:  # never missing (the empty list); every element checked, ranges too
            _count_list_failure(column, raw, counts, index, failing_rows)
            continue
        if is_missing(raw):
            if column.required:
                counts.missing += 1
                failing_rows.add(index)
            continue
        value = typed(column, raw)
        if value is None:
            counts.wrong_type += 1
            counts.example_type = raw if counts.example_type is None else counts.example_type
            failing_rows.add(index)
        elif column.dtype != "string" and ((column.min is not None and value < column.min)
                                          or (column.max is not None and value > column.max)):
            counts.out_of_range += 1
            counts.example_range = value if counts.example_range is None else counts.example_range
            failing_rows.add(index)
    return counts


def _count_list_failure(column: Column, raw: Any, counts: _ColumnCounts, index: int, failing_rows: set[int]) -> None:
    try:
        typed_list(column, raw)
    except InvalidValue as invalid:
        failing_rows.add(index)
        if invalid.reason == OUT_OF_RANGE:
            counts.out_of_range += 1
            counts.example_range = raw if counts.example_range is None else counts.example_range
        else:  # a mistyped or empty element, or a list too long under too_long: reject
            counts.wrong_type += 1
            counts.example_type = raw if counts.example_type is None else counts.example_type


def _describe(column: Column, key: str, counts: _ColumnCounts, rows: int, limit: float, where: str) -> list[Problem]:
    """Problems of one column whose failures exceed ``limit`` (a share of the sampled rows)."""
    problems = []
    label = f"{key} {column.name} ({column.kind})"
    if counts.wrong_type > limit * rows:
        problems.append(Problem(
            f"{label}: {counts.wrong_type} of {rows} sampled rows of {where} hold a value that is not {column.dtype} "
            f"(e.g. {quoted(counts.example_type)}); is the column mistyped in the spec?", column.name))
    if counts.missing > limit * rows:
        problems.append(Problem(
            f"{label}: {counts.missing} of {rows} sampled rows of {where} have no value but the column is required "
            "(declare required: false with a default, or fix the data)", column.name))
    if counts.out_of_range > limit * rows:
        bounds = f"[{'' if column.min is None else f'{column.min:g}'}, {'' if column.max is None else f'{column.max:g}'}]"
        problems.append(Problem(
            f"{label}: {counts.out_of_range} of {rows} sampled rows of {where} are outside {bounds} "
            f"(e.g. {quoted(counts.example_range)})", column.name))
    return problems


def _shown(names: Sequence[str], most: int = 40) -> str:
    """Column names, comma-separated, the first ``most`` of them."""
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _column_keys(spec: FeatureSpec) -> list[tuple[str, Column]]:
    """(key path, column) of every column the log holds: ``features[i]`` (derived histories left
    out) then ``columns[j]``."""
    return ([(f"features[{i}]", f) for i, f in enumerate(spec.features) if f.history is None]
            + [(f"columns[{i}]", c) for i, c in enumerate(spec.columns)])


def _label_problems(spec: FeatureSpec, sample: Sample, where: str) -> list[Problem]:
    problems = []
    for i, task in enumerate(spec.tasks):
        if task.kind != "binary" or task.label not in sample.columns:
            continue
        column = spec.column(task.label)
        others = sorted({v for v in (typed(column, r.get(task.label)) for r in sample.rows
                                     if not is_missing(r.get(task.label))) if v is not None and v not in (0, 1)})
        if others:
            shown = ", ".join(f"{v:g}" for v in others[:5])
            problems.append(Problem(
                f"tasks[{i}] {task.name}: the binary label {task.label!r} must be 0/1 but {where} holds {shown}",
                task.label))
    return problems


def _columns_problems(columns: Sequence[tuple[str, Column]], sample: Sample, limit: float, where: str,
                      looked_up: frozenset[str] = frozenset()) -> tuple[list[Problem], set[int]]:
    """(problems, indexes of failing rows) of ``(key path, column)`` pairs on a sample; a column
    in ``looked_up`` (a side table's) may be absent."""
    problems, failing_rows = [], set()
    listed = False
    for key, column in columns:
        if column.name not in sample.columns:
            if column.required and column.name not in looked_up:
                close = difflib.get_close_matches(column.name, sample.columns, n=1)
                message = f"{key} {column.name} ({column.dtype}): missing from {where}"
                message += f" (did you mean {close[0]!r}?)" if close else ""
                if not listed:
                    message += "; its columns are: " + _shown(sample.columns)
                    listed = True
                problems.append(Problem(message, column.name))
            continue
        counts = _count_failures(column, sample.rows, failing_rows)
        problems += _describe(column, key, counts, len(sample.rows), limit, where)
    return problems, failing_rows


def _where(sample: Sample) -> str:
    return sample.files[0] if len(sample.files) == 1 else f"{sample.path} ({len(sample.files)} files)"


def check_data(spec: FeatureSpec, sample: Sample) -> list[Problem]:
    """Problems of a data sample against a loaded spec (see the module docstring); a side table's
    column may be absent from the log (it is looked up)."""
    where = _where(sample)
    limit = spec.pipeline.max_reject_rate
    rows = len(sample.rows)
    problems, failing_rows = _columns_problems(_column_keys(spec), sample, limit, where, spec.table_column_names)
    if len(failing_rows) > limit * rows and not problems:
        problems.append(Problem(
            f"{len(failing_rows)} of {rows} sampled rows of {where} would be rejected ({len(failing_rows) / rows:.1%}), "
            f"more than pipeline.max_reject_rate {limit:g}: the run would fail"))
    problems += _label_problems(spec, sample, where)
    if spec.pipeline.unknown_columns == "reject":
        declared = {c.name for c in spec.all_columns}
        unknown = [c for c in sample.columns if c not in declared]
        if unknown:
            problems.append(Problem(
                f"pipeline.unknown_columns is reject, and {where} has undeclared column(s) {', '.join(unknown)}: "
                "every row would be rejected", unknown[0]))
    return problems


def check_tables(spec: FeatureSpec, max_rows: int = SAMPLE_ROWS) -> tuple[list[Problem], dict[str, Sample]]:
    """Problems of each side table whose ``input:`` the spec names, on a sample read as the log's:
    the table's files, its key and columns (each as :func:`check_data` checks a log column).

    Returns:
        ``(problems, samples)``: the problems, and table name -> its sample (tables read).
    """
    problems, samples = [], {}
    for i, table in enumerate(spec.tables):
        if table.input is None:
            continue
        try:
            sample = read_sample(table.input, max_rows)
        except InferError as exc:
            problems.append(Problem(f"tables[{i}] {table.name}: {exc}"))
            continue
        key = dataclasses.replace(spec.column(table.key), required=True, default=None)  # a table row needs its key
        columns = [(f"tables[{i}].key", key)] + [(f"tables[{i}].columns[{j}]", c) for j, c in enumerate(table.columns)]
        problems += _columns_problems(columns, sample, spec.pipeline.max_reject_rate, _where(sample))[0]
        samples[table.name] = sample
    return problems, samples


def joined_sample(spec: FeatureSpec, sample: Sample, tables: dict[str, Sample]) -> Sample:
    """The log's sample with each sampled table's columns looked up by key where a row lacks them
    (the pipeline's join, on the samples: a row's own value wins), for :func:`predictor_warnings`."""
    rows = [dict(row) for row in sample.rows]
    columns = list(sample.columns)
    for table in spec.tables:
        if table.name not in tables:
            continue
        key = spec.column(table.key)
        index: dict = {}
        for row in tables[table.name].rows:
            raw = row.get(table.key)
            index.setdefault(None if is_missing(raw) else typed(key, raw), row)
        index.pop(None, None)
        for row in rows:
            raw = row.get(table.key)
            found = index.get(None if is_missing(raw) else typed(key, raw))
            for column in table.columns if found is not None else ():
                if is_missing(row.get(column.name)):
                    row[column.name] = found.get(column.name)
        columns += [c.name for c in table.columns if c.name not in columns]
    return dataclasses.replace(sample, rows=rows, columns=columns)


def predictor_warnings(spec: FeatureSpec, sample: Sample) -> list[Problem]:
    """Warnings for declared features that predict a task's label almost perfectly on the sample
    (the label restated: :func:`feature_specs.column_choices.leak`) or behave like an outcome of
    the impression (:func:`feature_specs.outcomes.outcome_evidence`): values recorded after the
    impression, absent when the model ranks. One per feature, naming the feature and the label."""
    where = _where(sample)
    labels = {}
    for task in spec.tasks:
        if task.label in sample.columns and task.label not in labels:
            profile = profile_column(task.label, [row.get(task.label) for row in sample.rows])
            if profile.numbers is not None:
                labels[task.label] = profile
    if not labels:
        return []
    warnings = []
    for i, feature in enumerate(spec.features):
        if feature.name not in sample.columns or feature.name in labels:
            continue
        profile = profile_column(feature.name, [row.get(feature.name) for row in sample.rows])
        found = leak(profile, labels)
        why = found[1] if found else outcome_evidence(profile, labels)
        if why:
            warnings.append(Problem(
                f"features[{i}] {feature.name}: {why} (on {len(sample.rows):,} sampled rows of {where}); a feature "
                "that gives the label away is usually recorded after the impression and absent at serving time: "
                "offline metrics look excellent, served rankings do not. Drop it unless it is known when ranking",
                feature.name))
    return warnings


def check_report(spec_path: str, data_path: str | None = None, max_rows: int = SAMPLE_ROWS,
                 input_format: str | None = None) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) of a spec file and, given data, of a sample against it: the problems
    of :func:`check_spec`, and :func:`predictor_warnings` when there are none."""
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        return [Problem(str(exc))], []
    if data_path is None:
        return [], []
    try:
        sample = read_sample(data_path, max_rows, input_format)
    except InferError as exc:
        return [Problem(str(exc))], []
    table_problems, tables = check_tables(spec, max_rows)
    problems = check_data(spec, sample) + table_problems
    return problems, ([] if problems else predictor_warnings(spec, joined_sample(spec, sample, tables)))


def check_spec(spec_path: str, data_path: str | None = None, max_rows: int = SAMPLE_ROWS,
               input_format: str | None = None) -> list[Problem]:
    """Validates a spec file and, given data, a sample of the data against it.

    Args:
        spec_path: str. The spec YAML (or JSON).
        data_path: str or None. A CSV/Parquet/JSONL/TFRecord file or glob to check against the spec.
        max_rows: int. Rows of the data sampled at most.
        input_format: str or None. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord``; default from the
            extension.

    Returns:
        list of Problem, empty when the spec loads and the sample fits it (warnings aside: see
        :func:`check_report`).
    """
    return check_report(spec_path, data_path, max_rows, input_format)[0]
