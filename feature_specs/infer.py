"""Proposes a feature spec for a log nobody has written one for (``mmoe spec infer``).

:func:`infer_spec` reads a bounded sample of a CSV, Parquet, JSONL or TFRecord file (or a glob of
them) with the sampler ``mmoe spec check`` uses too (:mod:`feature_specs.sample`), profiles every
column (:mod:`feature_specs.profile`), decides (:mod:`feature_specs.column_choices`,
:mod:`feature_specs.task_choices`, and the ranking, split and model sections here) and writes a
complete spec as YAML (:mod:`feature_specs.render`), each choice explained in a comment:

* types from the values (``int``, ``float``, ``string``, lists of strings or ints); boolean
  columns are left out;
* strings and low-cardinality ints: ``vocabulary`` (``top_k``/``min_count`` from the counts), or
  ``hashing`` when the sample already holds more than ``VOCABULARY_MAX_DISTINCT`` values or
  mostly values seen once; embedding width ``6 * cardinality ** 0.25``, capped;
* numbers: ``zscore``; ``log1p`` when non-negative and right-skewed; ``quantile`` buckets when the
  tails stay heavy;
* columns that look like row ids (unique per row), constants or leaked labels (a near-perfect
  correlate of a label) are left out, with a comment saying why;
* columns that behave like outcomes of the impression (:mod:`feature_specs.outcomes`: a like, a
  follow, a "long view", time on the author's profile, against every label) are left out as
  label candidates, listed in :attr:`InferredSpec.label_candidates`; ``keep_features`` keeps one
  that is in fact known at ranking time;
* time (epoch seconds or milliseconds, ``yyyymmdd`` dates, date/time text, Parquet datetimes,
  :mod:`feature_specs.time_columns`) is never a feature; with a comparable time column the split
  is a time cut (train on the past, evaluate on the future), the cut in the comment;
* list-valued columns (arrays, JSON array text, delimited strings) are proposed as list features
  (``list:`` with the separator found and a ``max_length`` holding the longest sampled list; a
  vocabulary or hashing over the elements); lists of floats are left out;
* tasks: the first label is the click-like task when it is 0/1 (else the spec is regression only,
  and no 0/1 label may follow); a 0/1 label is a binary task, any other
  a regression (``log1p`` when non-negative and skewed, masked by the first label when it is only
  non-zero where that label is 1);
* with a time split, ``oov_dropout`` on ID features whose evaluated values are often unseen in
  training (:mod:`feature_specs.oov_choices`);
* the ranking group (``group_by``); without a time column, a hash split on it (else on a row id);
* side tables (``tables``, ``--table NAME[:KEY]=PATTERN``): the ``tables:`` section, each table's
  columns profiled by the same rules and its key declared from the log
  (:mod:`feature_specs.table_choices`).

Keys left at a spec default take it from the dataclass field (:func:`feature_specs.spec.field_default`).
The result loads with :func:`feature_specs.spec.load_spec` and runs through ``mmoe run`` as is.
Inference imports neither TensorFlow nor Beam (unlike ``feature_specs.tensors``, which the model
and the server use).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import yaml

from feature_specs.column_choices import KEEPABLE_FLAGS, ColumnChoice, embedding_dim, exclusion, feature_choice, kept_choice
from feature_specs.oov_choices import candidates as oov_candidates
from feature_specs.oov_choices import propose_oov_dropout
from feature_specs.profile import ColumnProfile, profile_column
from feature_specs.render import render_spec
from feature_specs.sample import SAMPLE_ROWS, InferError, Sample, did_you_mean, read_column, read_sample
from feature_specs.spec import FeatureSpec, ModelConfig, Split, TrainingConfig, field_default
from feature_specs.spec_reader import spec_from_dict
from feature_specs.table_choices import TablePlan, TableRequest, infer_table
from feature_specs.task_choices import LabelPlan, label_entry, plan_label
from feature_specs.time_columns import KEY_TYPES, TimeCut, row_times, split_time_column, time_cut, time_unit, time_value

__all__ = ["SAMPLE_ROWS", "InferError", "InferredSpec", "Sample", "embedding_dim", "infer_spec", "read_sample"]

SPLIT_SEED = 1
SMALL_DATA_ROWS = 10_000  # a whole data set below this many rows gets SMALL_MODEL and SMALL_DATA_EPOCHS
SMALL_MODEL = {"num_experts": 4, "expert_units": (32,), "tower_units": (16,)}
SMALL_DATA_EPOCHS = 5
SMALL_BATCH_ROWS = 20_000  # a whole data set below this many rows gets smaller batches
BIAS_TOWER_UNITS = (8,)


@dataclass
class InferredSpec:
    """A proposed spec.

    Args:
        yaml: str. The spec as YAML text with a comment on every choice.
        spec: FeatureSpec. The same spec, loaded and validated.
        choices: list of ColumnChoice, one per sampled column, in file order.
        tasks: list of LabelPlan, in the order given.
        sample_rows: int. Rows the inference read.
        time_cut: TimeCut or None. The proposed time split, when the log has a time column.
        tables: list of TablePlan. The proposed side tables, in the order given.
    """

    yaml: str
    spec: FeatureSpec
    choices: list[ColumnChoice]
    tasks: list[LabelPlan]
    sample_rows: int
    time_cut: TimeCut | None = None
    tables: list[TablePlan] = field(default_factory=list)

    @property
    def label_candidates(self) -> list[ColumnChoice]:
        """Columns left out because they behave like outcomes or leaked labels, in file order."""
        return [c for c in self.choices if c.role == "excluded" and c.flag in KEEPABLE_FLAGS]

    def summary(self) -> list[str]:
        """Lines for the terminal: what was left out and why it matters, and the split."""
        lines = []
        for choice in self.label_candidates:
            lines.append(f"left out {choice.name} ({choice.flag}): {choice.reason}")
        for choice in self.choices:
            if choice.role == "excluded" and choice.flag in ("timestamp", "date", "list"):
                lines.append(f"left out {choice.name} ({choice.flag}): {choice.reason}")
            elif choice.role == "feature" and "list" in choice.entry:
                lines.append(f"list feature {choice.name}: {choice.reason}")
        for table in self.tables:
            lines += table.summary()
        if self.time_cut is not None:
            lines.append(f"split: {self.time_cut.reason}")
        return lines

    def choice(self, name: str) -> ColumnChoice:
        """The choice on the log's column ``name``, else on a table's column of that name."""
        for choice in self.choices + [c for t in self.tables for c in t.choices]:
            if choice.name == name:
                return choice
        raise KeyError(name)

    def table(self, name: str) -> TablePlan:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


def spec_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for _ in range(3):
        base, ext = os.path.splitext(base)
        if not ext:
            break
    name = re.sub(r"[^a-z0-9_]+", "_", base.lower().replace("*", "")).strip("_")
    return name if name and not name[0].isdigit() else f"log_{name}" if name else "my_log"


def check_request(sample: Sample, labels: Mapping[str, str], group_by: str | None) -> None:
    """Raises InferError naming a label or group column that the file lacks, or a clash."""
    if not labels:
        raise InferError("name at least one label: --label click=COLUMN (columns: " + ", ".join(sample.columns) + ")")
    where = sample.files[0] if len(sample.files) == 1 else sample.path
    for task, column in labels.items():
        if not task.isidentifier():
            raise InferError(f"task name {task!r} must be an identifier (letters, digits, _)")
        if column not in sample.columns:
            raise InferError(f"label column {column!r} of task {task!r} is not in {where}"
                             f"{did_you_mean(column, sample.columns)}; its columns are: " + ", ".join(sample.columns))
        if not column.isidentifier():
            raise InferError(f"label column {column!r} must be an identifier (letters, digits, _) to be declared; rename it")
    duplicated = sorted({c for c in labels.values() if list(labels.values()).count(c) > 1})
    if duplicated:
        raise InferError(f"label column {duplicated[0]!r} is given for more than one task")
    if group_by is not None:
        if group_by not in sample.columns:
            raise InferError(f"group-by column {group_by!r} is not in {where}{did_you_mean(group_by, sample.columns)}; "
                             "its columns are: " + ", ".join(sample.columns))
        if group_by in labels.values():
            raise InferError(f"group-by column {group_by!r} is a label")
        if not group_by.isidentifier():
            raise InferError(f"group-by column {group_by!r} must be an identifier (letters, digits, _); rename it")


def proposed_time_cut(sample: Sample, choices: list[ColumnChoice], profiles: Mapping[str, ColumnProfile],
                      group_by: str | None) -> TimeCut | None:
    """The time cut on the best time column left out as time, or None (no comparable one, or one value).

    The cut comes from the whole log: when the sample is only its first rows, the time column alone
    is read through to the end (:func:`feature_specs.sample.read_column`), since a log in time order
    would otherwise be cut inside its first hours.
    """
    units = {c.name: time_unit(profiles[c.name]) for c in choices if c.role == "excluded" and c.flag in ("timestamp", "date")}
    key = split_time_column({name: unit for name, unit in units.items() if unit})
    if key is None:
        return None
    times = row_times([row.get(key) for row in sample.rows])
    every, whole = times, sample.exhausted
    if not sample.exhausted:
        values, whole = read_column(sample.path, key, sample.input_format, convert=time_value)
        every = np.array(values, dtype=np.float64)
    cut = time_cut(key, units[key], every[np.isfinite(every)].astype(np.int64), field_default(Split, "eval_fraction"),
                   whole)
    if cut is None or group_by is None:
        return cut
    sides: dict = {}
    for row, value in zip(sample.rows, times):
        if np.isfinite(value):
            sides.setdefault(row.get(group_by), set()).add(bool(value >= cut.cutoff))
    split_groups = sum(1 for s in sides.values() if len(s) > 1)
    whole = (f"; {split_groups:,} of {len(sides):,} sampled {group_by} groups straddle the cut (their rows are "
             "split by time)" if split_groups else f"; every sampled {group_by} group falls on one side of it")
    return TimeCut(cut.key, cut.unit, cut.cutoff, cut.eval_share, cut.reason + (whole if sides else ""))


def columns_and_times(sample: Sample, cut: TimeCut, names: Sequence[str]) -> tuple[dict[str, list], np.ndarray]:
    """Columns ``names`` and the time (in the cut's unit) of every row, aligned: the sample's rows when
    it holds the whole log, else each column read through the log (a log in time order would
    otherwise show only its past)."""
    if sample.exhausted:
        return ({name: [row.get(name) for row in sample.rows] for name in names},
                row_times([row.get(cut.key) for row in sample.rows]))
    times, _ = read_column(sample.path, cut.key, sample.input_format, convert=time_value)
    return ({name: read_column(sample.path, name, sample.input_format)[0] for name in names},
            np.array(times, dtype=np.float64))


def ranking_and_split(plans: list[LabelPlan], group_by: str | None, choices: list[ColumnChoice],
                       profiles: Mapping[str, ColumnProfile],
                       cut: TimeCut | None = None) -> tuple[dict, dict, str, str]:
    """The ranking and split sections and a comment for each; a time split when ``cut`` is given."""
    first = plans[0]
    regressions = [p for p in plans if p.kind == "regression"]
    if first.kind == "regression":  # regression only: no probability to multiply
        ranking = {"group_by": group_by, "kind": "weighted_sum", "weights": {p.task: 1.0 for p in plans}}
        ranking_why = ("score = predicted " + " + ".join(p.task for p in plans)
                       + ": regression only, candidates rank by the predicted value")
    elif regressions:
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
            key, split_why = ids[0], (f"hash of the row id {ids[0]}: a random "
                                      f"{field_default(Split, 'eval_fraction'):.0%} of rows for evaluation")
        else:
            scalars = [c for c in choices if c.role == "feature" and profiles[c.name].lists is None]  # a list keys nothing
            features = [c for c in scalars if profiles[c.name].counts] or scalars
            best = max(features, key=lambda c: profiles[c.name].distinct)
            key = best.name
            split_why = (f"no group or row id: hash of {key}, the most varied feature ({profiles[key].distinct:,} values); "
                         "rows sharing a value stay together")
    split = {"method": "hash", "key": key, "eval_fraction": field_default(Split, "eval_fraction"), "seed": SPLIT_SEED}
    split_why += f"; {split['eval_fraction']:.0%} of keys to eval, seeded"
    if cut is not None:
        split = {"method": "timestamp", "key": cut.key, "cutoff": cut.cutoff}
        split_why = cut.reason
    return ranking, split, ranking_why, split_why


def model_sections(sample: Sample, has_bias: bool, tasks: int) -> tuple[dict, dict, str]:
    rows = len(sample.rows)
    small = sample.exhausted and rows < SMALL_DATA_ROWS
    model = {key: field_default(ModelConfig, key)
             for key in ("architecture", "num_experts", "expert_units", "tower_units")}
    if small:
        model.update(SMALL_MODEL)
    model = {key: list(value) if isinstance(value, tuple) else value for key, value in model.items()}
    if has_bias:
        model["bias_tower_units"] = list(BIAS_TOWER_UNITS)
    training = {key: field_default(TrainingConfig, key)
                for key in ("batch_size", "epochs", "learning_rate", "shuffle_buffer", "seed")}
    if sample.exhausted and rows < SMALL_BATCH_ROWS:
        training["batch_size"] = 128 if rows >= 2_000 else 32
    if small:
        training["epochs"] = SMALL_DATA_EPOCHS
    size = f"the whole data set has {rows:,} rows" if sample.exhausted else f"the sample holds the first {rows:,} rows"
    default_size = (f"the default {model['architecture'].upper()} size ({model['num_experts']} experts of "
                    f"{model['expert_units'][0]} units), batches of {training['batch_size']}")
    why = (f"{size}: " + (f"a small model ({model['num_experts']} experts), small batches and a few more epochs"
                          if small else default_size)
           + f"; one gate and one tower per task ({tasks} task{'s' if tasks > 1 else ''}). "
           "`mmoe train --epochs N --model ARCH` overrides without editing")
    return model, training, why


def infer_spec(path: str, labels: Mapping[str, str], group_by: str | None = None, max_rows: int = SAMPLE_ROWS,
               name: str | None = None, input_format: str | None = None,
               keep_features: Sequence[str] = (), tables: Sequence[TableRequest] = ()) -> InferredSpec:
    """Proposes a complete spec for a CSV, Parquet, JSONL or TFRecord log.

    Args:
        path: str. File, glob pattern or URI of the log.
        labels: mapping task name -> label column, in task order; the first is the click-like
            binary (0/1) task, e.g. ``{"click": "clicked", "engagement": "dwell_seconds"}``, or,
            when it is not 0/1, the spec is regression only (``{"stars": "rating"}``).
        group_by: str or None. Request id column: the ranking group and the split key.
        max_rows: int. Rows sampled at most (streamed from the start of the files).
        name: str or None. Spec name (also the served model's name); default from the file name.
        input_format: str or None. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord``; default from the
            extension.
        keep_features: columns to keep as features although they look like outcomes or leaked
            labels (``--keep-feature``): only for values known before the impression; the log's
            or a table's.
        tables: side tables to propose (``--table NAME[:KEY]=PATTERN``), each joined by a column
            of the log (:mod:`feature_specs.table_choices`).

    Returns:
        InferredSpec: the YAML text, the loaded spec and the per-column decisions.

    Raises:
        InferError: unsupported format, missing or empty file, a label or group column the file
            lacks (the message lists the columns), a 0/1 label after a first that is not, a kept
            column the files lack or that is left out for another reason than an outcome or a
            leak, a table that cannot be joined (:func:`feature_specs.table_choices.infer_table`).
    """
    sample = read_sample(path, max_rows, input_format)
    check_request(sample, labels, group_by)
    for column in keep_features:
        if column in labels.values() or column == group_by:
            raise InferError(f"--keep-feature {column!r} is a label or the group-by column")
    profiles = {c: profile_column(c, [row.get(c) for row in sample.rows]) for c in sample.columns}
    plans: list[LabelPlan] = []
    for task, column in labels.items():
        first = plans[0] if plans else None
        binary_first = first is not None and first.kind == "binary"
        plans.append(plan_label(task, column, profiles[column], first, profiles[first.column] if binary_first else None))
    for plan in plans:  # a regression task's served output is named after the task (mmoe.score.output_name)
        if plan.kind == "regression" and plan.task in sample.columns:
            raise InferError(f"task {plan.task!r} is a regression, whose predictions are served and evaluated under "
                             f"the task's name, and {plan.task!r} is a column of the log: name the task otherwise, "
                             f"e.g. --label {plan.task}_pred={plan.column}")
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
        excluded = exclusion(profile, label_profiles)
        if excluded and column in keep_features:
            choices.append(kept_choice(ColumnChoice(column, profile.dtype, "excluded", excluded[1], flag=excluded[0]),
                                       profile))
        elif excluded:
            flag, reason = excluded
            if flag == "leak":
                reason += f" (--keep-feature {column} keeps it as a feature if it is known before the impression)"
            choices.append(ColumnChoice(column, profile.dtype, "excluded", reason, flag=flag))
        else:
            choices.append(feature_choice(profile))
    taken = set(sample.columns)
    plans_of_tables = [infer_table(request, sample, profiles, label_profiles, taken, max_rows, keep_features)
                       for request in tables]
    known = sample.columns + [c.name for t in plans_of_tables for c in t.choices]
    for column in keep_features:
        if column not in known:
            raise InferError(f"--keep-feature {column!r} is not a column{did_you_mean(column, known)}; "
                             "its columns are: " + ", ".join(known))
    if not any(c.role == "feature" for c in choices) and not plans_of_tables:
        raise InferError(f"{sample.path}: no column is usable as a feature: "
                         + "; ".join(f"{c.name}: {c.reason}" for c in choices if c.role == "excluded"))
    by_name = {c.name: c for c in choices}
    for table in plans_of_tables:  # the key is declared from the log: as a feature, the group, or under columns
        key = by_name[table.key]
        if key.role == "excluded" and table.key not in {e["name"] for e in declared_extra}:
            declared_extra.append({"_why": f"{table.key}: the key side table {table.name} joins on ({key.flag}, not "
                                           f"a feature: {key.reason})",
                                   "name": table.key, "type": profiles[table.key].dtype})
    cut = proposed_time_cut(sample, choices, profiles, group_by)
    ids = oov_candidates(choices, profiles) if cut is not None else []
    if ids:
        propose_oov_dropout(ids, *columns_and_times(sample, cut, [c.name for c in ids]), cut.cutoff)
    ranking, split, ranking_why, split_why = ranking_and_split(plans, group_by, choices, profiles, cut)
    declared = {c.name for c in choices if c.role in ("feature", "bias")} | {e["name"] for e in declared_extra}
    if split["key"] not in declared:
        key_profile = profiles[split["key"]]
        if cut is not None:
            declared_extra.append({"_why": f"{cut.key}: the split key, {cut.unit} compared with split.cutoff "
                                           "(a row without it cannot be placed in time and is rejected); not a feature",
                                   "name": cut.key, "type": KEY_TYPES[cut.unit]})
        else:
            declared_extra.append({"_why": f"{split['key']}: the split key", "name": split["key"],
                                   "type": key_profile.dtype})
    label_entries = [label_entry(p, profiles[p.column], profiles[plans[0].column]) for p in plans]
    model, training, model_why = model_sections(sample, any(c.role == "bias" for c in choices), len(plans))
    text = render_spec(name or spec_name(path), sample, choices, plans, label_entries, ranking, split, ranking_why,
                   split_why, model, training, model_why, declared_extra, plans_of_tables)
    spec = spec_from_dict(yaml.safe_load(text), source="<inferred spec>")
    return InferredSpec(yaml=text, spec=spec, choices=choices, tasks=plans, sample_rows=len(sample.rows), time_cut=cut,
                        tables=plans_of_tables)
