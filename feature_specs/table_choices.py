"""Proposes the ``tables:`` section of a spec: side tables joined to the log by key
(``mmoe spec infer --table NAME[:KEY]=PATTERN``).

:func:`infer_table` reads a bounded sample of one table (CSV, Parquet, JSONL or TFRecord, with
the log's sampler, :func:`feature_specs.sample.read_sample`) and decides what the spec does with
each of its columns, by the log's rules (:mod:`feature_specs.column_choices`):

* the key: the column named in ``NAME:KEY``, or else the one column the table shares with the
  log (the spec joins a table on a column of the same name in both); it must be a scalar int
  or string column of the log, one row per key in the table;
* on the table's own rows (one per key): row ids (``title``, unique per movie), constants, time,
  lists of floats and unsupported values are left out with the reason; list-valued columns
  (``"Action|Adventure"``) are proposed as lists with the separator found;
* on the sampled impressions joined with the table (each row's key looked up): columns that
  predict a label almost perfectly (leaks) or behave like outcomes are left out, as in the log;
* a column the log holds too is the log's (an impression's own value wins over the table's);
* the join rule is ``missing_key: default`` (:data:`MISSING_KEY_RULE`), with a default on every
  scalar column: the key coverage measured on the sample (every key of the table read, the
  sampled impressions' keys looked up) is in the comment. Why not ``reject`` where the sample's
  keys are all found: a full log may still hold keys the table lacks, and at serving a rank
  request naming an id the exported snapshot lacks (an item added after the export) fails under
  ``reject``; with ``default`` it is scored with the defaults the training rows had.

Plain Python and numpy: no Beam, no TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from feature_specs.column_choices import ColumnChoice, exclusion, feature_choice, fill_value, kept_choice, leak
from feature_specs.outcomes import outcome
from feature_specs.profile import ColumnProfile, as_category, profile_column
from feature_specs.sample import InferError, Sample, did_you_mean, read_column, read_sample
from feature_specs.spec import Column, Table, field_default
from feature_specs.values import is_missing

MISSING_KEY_RULE = "default"  # what infer proposes, for the reasons in the module docstring
LOW_COVERAGE = 0.5  # fewer sampled impressions' keys found: the summary warns (a wrong key?)
# The keys of a column's type and checks (a table's column entry); a feature entry holds the rest.
COLUMN_KEYS = frozenset(f.name for f in dataclasses.fields(Column)) - {"dtype"} | {"type"}


@dataclass(frozen=True)
class TableRequest:
    """One ``--table`` of ``mmoe spec infer``.

    Args:
        name: str. The table's name (an identifier).
        pattern: str. File, glob or URI of the table; written as the table's ``input:``.
        key: str or None. The join column; None: the one column the table shares with the log.
    """

    name: str
    pattern: str
    key: str | None = None

    @classmethod
    def parse(cls, text: str) -> TableRequest:
        """``NAME=PATTERN`` or ``NAME:KEY=PATTERN`` (the pattern may hold ``:`` and ``=``).

        Raises:
            InferError: no ``=``, an empty part, or a name or key that is not an identifier.
        """
        head, sep, pattern = text.partition("=")
        name, _, key = head.partition(":")
        if not sep or not name or not pattern or (":" in head and not key):
            raise InferError(f"expected --table NAME=PATTERN or NAME:KEY=PATTERN, e.g. movies:movieId=raw/movies.csv, "
                             f"got {text!r}")
        for what, value in (("table name", name), ("key", key)):
            if value and not value.isidentifier():
                raise InferError(f"--table {text!r}: the {what} {value!r} must be an identifier (letters, digits, _)")
        return cls(name, pattern, key or None)


@dataclass
class TablePlan:
    """A proposed side table.

    Args:
        name: str. The table's name.
        key: str. The join column (a column of the log and of the table).
        pattern: str. The table's ``input:``.
        sample: Sample. The table's sampled rows.
        choices: one ColumnChoice per table column but the key, in file order; a feature's
            ``entry`` is its ``features:`` entry (name and transform), :attr:`columns` holds its
            type and checks.
        columns: the ``tables[*].columns`` entries of the kept columns, in file order.
        keys: int. Distinct keys read from the table (its key column read through).
        found: int. Sampled impressions whose key is in the table.
        keyed: int. Sampled impressions that have a key.
        reason: str. The explanation written as the table's YAML comment.
    """

    name: str
    key: str
    pattern: str
    sample: Sample
    choices: list[ColumnChoice]
    columns: list[dict]
    keys: int
    found: int
    keyed: int
    reason: str = ""
    missing_key: str = MISSING_KEY_RULE
    features: list[ColumnChoice] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Share of the keyed sampled impressions whose key the table holds."""
        return self.found / self.keyed if self.keyed else 0.0

    def entry(self) -> dict:
        """The ``tables:`` item without its columns."""
        return {"name": self.name, "key": self.key, "input": self.pattern, "missing_key": self.missing_key}

    def summary(self) -> list[str]:
        """Lines for the terminal: the join, each column kept or left out, a low coverage warning."""
        kept = ", ".join(c.name for c in self.features) or "none"
        lines = [f"table {self.name}: joined on {self.key}, {self.found:,} of {self.keyed:,} sampled impressions' "
                 f"keys found ({self.coverage:.1%}); columns {kept}"]
        if self.coverage < LOW_COVERAGE:
            lines.append(f"table {self.name}: only {self.coverage:.1%} of the sampled keys are in the table: "
                         f"is {self.key} the right key?")
        for choice in self.choices:
            if choice.role == "excluded":
                lines.append(f"left out {choice.name} of table {self.name} ({choice.flag}): {choice.reason}")
            elif "list" in self.column(choice.name):
                lines.append(f"list feature {choice.name}: {choice.reason}")
        return lines

    def column(self, name: str) -> dict:
        for column in self.columns:
            if column["name"] == name:
                return column
        raise KeyError(name)


def table_key(request: TableRequest, table: Sample, log: Sample) -> str:
    """The join column of ``request``: its ``key``, or the one column both files hold.

    Raises:
        InferError: the key is not a column of the log or of the table (naming it and listing
            the columns), or no (or more than one) column is shared and none is named.
    """
    where = table.files[0] if len(table.files) == 1 else table.path
    if request.key is not None:
        if request.key not in log.columns:
            raise InferError(f"--table {request.name}: key {request.key!r} is not a column of the log "
                             f"{log.path}{did_you_mean(request.key, log.columns)}; the log's columns are: "
                             + ", ".join(log.columns))
        if request.key not in table.columns:
            raise InferError(f"--table {request.name}: key {request.key!r} is not a column of the table {where}"
                             f"{did_you_mean(request.key, table.columns)}; its columns are: " + ", ".join(table.columns)
                             + " (the table's key column has the log's name)")
        return request.key
    shared = [c for c in table.columns if c in log.columns]
    if len(shared) == 1:
        return shared[0]
    if not shared:
        raise InferError(f"--table {request.name}: no column of {where} ({', '.join(table.columns)}) is a column "
                         f"of the log ({', '.join(log.columns)}); the table's key column must have the log's name")
    raise InferError(f"--table {request.name}: {where} shares {len(shared)} columns with the log "
                     f"({', '.join(shared)}); name the key: --table {request.name}:KEY={request.pattern}")


def _typed_keys(values: Sequence[Any], dtype: str) -> list:
    return [None if is_missing(v) else as_category(v, dtype) for v in values]


def infer_table(request: TableRequest, log: Sample, log_profiles: Mapping[str, ColumnProfile],
                label_profiles: Mapping[str, ColumnProfile], taken: set[str], max_rows: int,
                keep_features: Sequence[str] = ()) -> TablePlan:
    """Proposes one side table.

    Args:
        request: TableRequest. The ``--table`` given.
        log: Sample. The log's sample (its rows are joined with the table's to test for leaks).
        log_profiles: the log's column profiles, by name (the key's type is the log's).
        label_profiles: label column -> its profile, every declared label.
        taken: names of columns already declared (the log's, earlier tables'); updated with this
            table's kept columns.
        max_rows: int. Table rows sampled at most; the key column alone is read through.
        keep_features: columns to keep although they look like outcomes or leaks.

    Returns:
        TablePlan: the table's entry, its columns and their features.

    Raises:
        InferError: the table cannot be read, its key is missing or not a scalar int or string
            column of the log, is a label, two sampled table rows share a key, or no sampled
            impression's key is in the table.
    """
    if not request.name.isidentifier():
        raise InferError(f"--table {request.name!r}: the table name must be an identifier (letters, digits, _)")
    table = read_sample(request.pattern, max_rows)
    key = table_key(request, table, log)
    key_profile = log_profiles[key]
    if key in label_profiles:
        raise InferError(f"--table {request.name}: key {key!r} is a label of the log")
    if key_profile.dtype not in ("int", "string") or key_profile.lists is not None:
        kind = "a list" if key_profile.lists is not None else key_profile.dtype or "without a type"
        raise InferError(f"--table {request.name}: key {key!r} is {kind} in the log; a table key is an int or "
                         "string column with one value per row")
    dtype = key_profile.dtype
    where = table.files[0] if len(table.files) == 1 else table.path
    sampled_keys = _typed_keys([row.get(key) for row in table.rows], dtype)
    position: dict[Any, int] = {}
    for i, value in enumerate(sampled_keys):
        if value is None:
            continue
        if value in position:
            raise InferError(f"--table {request.name}: key {key}={value!r} is in rows {position[value] + 1} and "
                             f"{i + 1} of {where}; a table holds one row per key")
        position[value] = i
    every_key, read_through = read_column(request.pattern, key, convert=lambda v: None if is_missing(v)
                                          else as_category(v, dtype))
    table_keys = {k for k in every_key if k is not None}
    log_keys = _typed_keys([row.get(key) for row in log.rows], dtype)
    keyed = sum(k is not None for k in log_keys)
    found = sum(k in table_keys for k in log_keys if k is not None)
    if not found:
        raise InferError(f"--table {request.name}: none of the {keyed:,} sampled impressions' {key} values is a key "
                         f"of {where} ({len(table_keys):,} keys, e.g. {next(iter(table_keys), None)!r}; the log's "
                         f"e.g. {next((k for k in log_keys if k is not None), None)!r})")
    joined_rows = [table.rows[position[k]] if k in position else {} for k in log_keys]
    plan = TablePlan(request.name, key, request.pattern, table, [], [], len(table_keys), found, keyed)
    for name in table.columns:
        if name == key:
            continue
        plan.choices.append(_column_choice(name, table, joined_rows, label_profiles, taken, keep_features, plan))
    plan.features = [c for c in plan.choices if c.role == "feature"]
    if not plan.features:
        raise InferError(f"--table {request.name}: no column of {where} is usable as a feature: "
                         + "; ".join(f"{c.name}: {c.reason}" for c in plan.choices))
    taken.update(c.name for c in plan.features)
    missing = keyed - found
    scanned = "" if read_through else " (its first rows: the key column was read up to the scan limit)"
    plan.reason = (
        f"{request.name}: {len(table.rows):,} rows sampled from {where}, joined on {key} "
        f"({len(table_keys):,} keys read{scanned}); {found:,} of {keyed:,} sampled impressions' keys are in the table "
        f"({plan.coverage:.1%}). missing_key: {MISSING_KEY_RULE}: "
        + (f"the {missing:,} impressions without a table row take each column's default, counted in report.json"
           if missing else "every sampled key is found, and default still: a full log may hold keys the table lacks, "
                           "and at serving an id the exported snapshot lacks (a new item) is scored with the "
                           "defaults instead of failing the request; reject drops such impressions instead")
        + f". join: {field_default(Table, 'join')} (a side input when the files are small, a key-grouped join when not)")
    return plan


def _column_choice(name: str, table: Sample, joined_rows: list[dict], label_profiles: Mapping[str, ColumnProfile],
                   taken: set[str], keep_features: Sequence[str], plan: TablePlan) -> ColumnChoice:
    """One table column's choice; a kept one's checks appended to ``plan.columns``."""
    profile = profile_column(name, [row.get(name) for row in table.rows])
    if name in taken:
        return ColumnChoice(name, profile.dtype, "excluded", "also a column of the log or of an earlier table: "
                            "declared there (an impression's own value wins over a table's)", flag="duplicate")
    excluded = exclusion(profile, {})  # on the table's rows: ids, constants, time, unsupported values
    if excluded is None:
        joined = profile_column(name, [row.get(name) for row in joined_rows])
        excluded = (leak(joined, label_profiles) or outcome(joined, label_profiles)) if joined.present else None
        if excluded:
            excluded = (excluded[0], excluded[1] + " (on the sampled impressions joined with the table)")
    if excluded:
        choice = ColumnChoice(name, profile.dtype, "excluded", excluded[1], flag=excluded[0])
        if name not in keep_features:
            return choice
        choice = kept_choice(choice, profile)
    else:
        choice = feature_choice(profile)
    if choice.role != "feature":  # a bias feature (a display position) is the log's, never a table's
        return ColumnChoice(name, profile.dtype, "excluded", "a display position belongs to the impression, not "
                            "to a table", flag="unsupported")
    column = {k: v for k, v in choice.entry.items() if k in COLUMN_KEYS}
    if column.get("list") is None and "default" not in column:  # missing_key: default needs one
        default, said = fill_value(profile)
        column.update(required=False, default=default)
        choice.reason += f"; a key missing from the table gives {said}"
    choice.entry = {k: v for k, v in choice.entry.items() if k not in COLUMN_KEYS or k == "name"}
    plan.columns.append(column)
    choice.reason = f"from table {plan.name}: {choice.reason}"
    return choice


def table_requests(texts: Sequence[str]) -> list[TableRequest]:
    """``--table`` values parsed, each table named once.

    Raises:
        InferError: a value that does not parse, or a table named twice.
    """
    requests = [TableRequest.parse(t) for t in texts]
    twice = [n for n, c in collections.Counter(r.name for r in requests).items() if c > 1]
    if twice:
        raise InferError(f"--table {twice[0]} is given more than once")
    return requests
