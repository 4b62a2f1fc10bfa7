"""Side tables: attributes of users or items joined to the impressions by key (the spec's ``tables:``).

Each table's rows are read like the main input (CSV, Parquet, JSONL) and typed with the spec's
checks of the table's key column and columns (:func:`pipelines.validate.check_record`). A table
row that fails a check, or has no key, does not reach the join: it is written to
``rejected/table_<name>-*.jsonl`` with its reason and counted in ``report.json`` under
``tables.<name>.rejected_rows`` (a table-level report: table rows are not impressions, so the
impressions' reconciliation ``input = written + rejected`` is untouched). Two rows with one key
fail the run with a :class:`DuplicateKeyError` naming the table, both files and the key.

The join, per impression (before the joined row is validated, so the table's values go through
the impression's checks as well and the train split's statistics and vocabularies are computed on
joined rows):

- key found: the table's typed values are added; a value the impression itself carries (not
  missing) wins, as a feature sent in a serving request does;
- key not in the table: counted as ``tables.<name>.missing_key``; under ``missing_key: default``
  the row goes on without the table's values (validation gives each column its ``default``, a
  list column the empty list); under ``missing_key: reject`` it is rejected with reason
  ``missing_key``, naming the table and the key;
- key absent or not of the key column's type: the row goes on unjoined, and validation rejects
  it for its key (or gives an optional key its default, and the table columns theirs).

How a table is joined (the table's ``join:``; ``auto`` decides by the size of the table's files,
measured before the pipeline starts, :func:`choose_join`):

- ``side_input`` (``auto`` at most :data:`SIDE_INPUT_MAX_BYTES`): the typed table is collected
  into one :class:`TableIndex` and handed to every worker as a singleton side input
  (``beam.pvalue.AsSingleton``), so impressions are joined where they are, without a shuffle. On
  the batched path a batch's key column is matched against the index in one ``pc.index_in`` and
  each table column is a ``take`` from the index's Arrow arrays: no Python per row. The table
  must fit in each worker's memory.
- ``grouped`` (``auto`` above it): no worker holds the table. On the row path impressions and
  table rows are keyed and joined with ``CoGroupByKey``, at the cost of shuffling the
  impressions. On the batched path the batches stay whole: each batch is given an id and sends
  only its distinct keys, ``(key, batch id)``; a ``CoGroupByKey`` with the table rows sends each
  wanted row to the batches that hold its key, ``(batch id, (key, row))``; a second one on the
  batch id brings a batch together with its rows, and the batch is joined as on the side-input
  path against an index of just those rows (one ``index_in`` and a ``take`` per column). So a
  batch shuffles once as one Arrow table, the table's rows once per batch that needs them, and
  validation after the join stays vectorized.

Each table's typed rows are also written as ``artifacts/tables/<name>.jsonl``, the snapshot
that export puts inside the SavedModel (:mod:`serving.export`).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any, Iterable, Mapping

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from feature_specs.errors import UserError
from feature_specs.spec import Column, FeatureSpec, Table
from feature_specs.values import InvalidValue, is_missing, typed_value
from pipelines.batches import RawBatch
from pipelines.input_checks import check_input_files
from pipelines.options import MissingInputError, OptionError, infer_input_format
from pipelines.records import MISSING_KEY, RawRecord, Rejection
from pipelines.validate import check_record
from pipelines.validate_batches import arrow_type

SIDE_INPUT_MAX_BYTES = 256 << 20  # join: auto holds a table whose files are at most this size in memory
JOINS = ("side_input", "grouped")  # what join: auto resolves to
REJECTED = "rejected"
STATS = "stats"
BATCHES = "batches"


class DuplicateKeyError(UserError, ValueError):
    """Two rows of a side table have the same key; the message names the table, files and key."""


def duplicate_key_error(table: Table, key: Any, sources: Iterable[str]) -> DuplicateKeyError:
    """The error for ``key`` held by table rows read from ``sources`` (one per row)."""
    sources = sorted(sources)
    return DuplicateKeyError(f"side table {table.name!r}: key {table.key}={key!r} is in {len(sources)} rows "
                             f"({' and '.join(sources[:2])}); a table holds one row per key")


def one_row(table: Table, key: Any, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[str, Mapping] | None:
    """The one ``(source, row)`` of ``key`` among a key group's table rows, None when there is none.

    Raises:
        DuplicateKeyError: two or more rows have the key.
    """
    rows = list(rows)
    if len(rows) > 1:
        raise duplicate_key_error(table, key, (source for source, _ in rows))
    return rows[0] if rows else None


def choose_join(table: Table, total_bytes: int) -> str:
    """``side_input`` or ``grouped`` for ``table`` whose files hold ``total_bytes``: the table's
    ``join``, or for ``auto`` ``side_input`` up to :data:`SIDE_INPUT_MAX_BYTES`."""
    if table.join != "auto":
        return table.join
    return "side_input" if total_bytes <= SIDE_INPUT_MAX_BYTES else "grouped"


def table_inputs(spec: FeatureSpec, patterns: Mapping[str, str]) -> dict[str, tuple[str, str, str]] | None:
    """Each side table's ``(pattern, format, join)``, checked before the pipeline starts.

    Args:
        spec: FeatureSpec. Its ``tables``.
        patterns: table name -> file pattern (``--table NAME=PATTERN``), overriding ``input:``.

    Returns:
        None when the spec has no tables; else table name -> ``(pattern, format, join)`` with
        ``join`` resolved by :func:`choose_join` from the matched files' total size.

    Raises:
        OptionError: ``--table`` names a table the spec lacks, or a table has no input.
        MissingInputError: no file matches a table's pattern.
        InputFileError: a table's file is malformed or lacks its key or a required column.
    """
    names = [t.name for t in spec.tables]
    unknown = sorted(set(patterns) - set(names))
    if unknown:
        raise OptionError(f"--table names table(s) {', '.join(unknown)} that the spec's tables: section "
                          f"does not declare ({', '.join(names) or 'none'})")
    if not spec.tables:
        return None
    inputs = {}
    for table in spec.tables:
        pattern = patterns.get(table.name, table.input)
        if pattern is None:
            raise OptionError(f"side table {table.name!r} has no input: pass --table {table.name}=PATTERN "
                              f"or set tables[*].input in the spec")
        matched = FileSystems.match([pattern])[0].metadata_list
        if not matched:
            raise MissingInputError(f"no file matches {pattern!r} (side table {table.name!r})")
        input_format = infer_input_format(pattern)
        check_input_files(sorted(m.path for m in matched), input_format,
                          [c.name for c in table_columns(spec, table) if c.required])
        inputs[table.name] = (pattern, input_format, choose_join(table, sum(m.size_in_bytes for m in matched)))
    return inputs


def key_column(spec: FeatureSpec, table: Table) -> Column:
    """The impressions' key column, required (a table row needs its key)."""
    return dataclasses.replace(spec.column(table.key), required=True, default=None)


def table_columns(spec: FeatureSpec, table: Table) -> tuple[Column, ...]:
    """The columns a table row is checked against: its key column, then its columns."""
    return (key_column(spec, table),) + table.columns


def typed_key(column: Column, raw: Any) -> Any:
    """An impression's key as the table is keyed (int or str), or None when it is absent or not
    of the key's type (the row then goes on unjoined and validation rejects it)."""
    if is_missing(raw):
        return None
    try:
        return typed_value(column, raw)
    except InvalidValue:
        return None


def _add(stats: dict, key: str, n: int = 1) -> None:
    if n:
        stats[key] = stats.get(key, 0) + n


def _sum_stats(parts: Iterable[Mapping[str, int]]) -> dict:
    total: dict[str, int] = {}
    for part in parts:
        for key, n in part.items():
            _add(total, key, n)
    return total


class TableIndex:
    """A typed table held whole: key -> row, and per column an Arrow array (row order) to ``take``.

    Args:
        table: Table. The spec's table.
        key_dtype: str. ``int`` or ``string``: the key's type.
        rows: ``(key, source, row)`` per typed table row; ``row`` maps each column to its value.

    Raises:
        DuplicateKeyError: two rows have the same key.
    """

    def __init__(self, table: Table, key_dtype: str, rows: Iterable[tuple[Any, str, Mapping[str, Any]]]):
        self.table = table
        self.rows: dict[Any, Mapping[str, Any]] = {}
        sources: dict[Any, str] = {}
        for key, source, row in sorted(rows, key=lambda item: (item[1], str(item[0]))):
            if key in self.rows:
                raise duplicate_key_error(table, key, (sources[key], source))
            self.rows[key] = row
            sources[key] = source
        self._key_type = pa.int64() if key_dtype == "int" else pa.string()
        self._arrays: dict[str, pa.Array] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __reduce__(self):  # pickled as its rows: the Arrow arrays are rebuilt where it is used
        return _rebuilt_index, (self.table, "int" if self._key_type == pa.int64() else "string", self.rows)

    def arrays(self) -> tuple[pa.Array, dict[str, pa.Array]]:
        """``(keys, columns)``: the keys and each column's values, one entry per row, as Arrow."""
        if self._arrays is None:
            keys = list(self.rows)
            self._arrays = {"": pa.array(keys, type=self._key_type)}
            for column in self.table.columns:
                self._arrays[column.name] = pa.array([self.rows[k][column.name] for k in keys],
                                                     type=arrow_type(column))
        columns = {name: array for name, array in self._arrays.items() if name}
        return self._arrays[""], columns


def _rebuilt_index(table, key_dtype, rows):
    index = TableIndex.__new__(TableIndex)
    index.table, index.rows = table, dict(rows)
    index._key_type = pa.int64() if key_dtype == "int" else pa.string()
    index._arrays = None
    return index


def missing_key_rejection(record: RawRecord, table: Table, key: Any) -> Rejection:
    return Rejection(record.source, record.row, MISSING_KEY, table.key,
                     f"{table.key}={key!r} is not in side table {table.name!r} (missing_key: reject)")


def join_record(record: RawRecord, table: Table, key: Any, row: Mapping[str, Any] | None,
                stats: dict) -> RawRecord | Rejection:
    """One impression joined with its table row (None: the key is not in the table).

    Args:
        record: RawRecord. The impression.
        table: Table. The spec's table.
        key: the impression's typed key (:func:`typed_key`); None passes the row on unjoined.
        row: the table row of ``key``, or None.
        stats: per-bundle counts, updated.

    Returns:
        The joined RawRecord (its ``row`` unchanged, table values added where the impression has
        none), or a ``missing_key`` Rejection.
    """
    if key is None:
        return record
    if row is None:
        _add(stats, f"{table.name}.missing_key")
        return missing_key_rejection(record, table, key) if table.missing_key == "reject" else record
    _add(stats, f"{table.name}.looked_up")
    values = dict(record.values)
    for column in table.columns:
        if is_missing(values.get(column.name)):
            values[column.name] = row[column.name]
    return RawRecord(record.source, record.row, values)


class _TypeTableRows(beam.DoFn):
    """A table's RawRecord -> ``(key, (source, typed row))``; a row failing a check to ``rejected``."""

    def __init__(self, columns: tuple[Column, ...]):
        self._columns = columns

    def process(self, record):
        checked = check_record(record, self._columns)
        if isinstance(checked, Rejection):
            yield beam.pvalue.TaggedOutput(REJECTED, checked)
            return
        key = checked.pop(self._columns[0].name)
        yield key, (record.source, checked)


class _Stats(beam.DoFn):
    """Base of the join DoFns: per-bundle counts emitted on ``stats``."""

    def start_bundle(self):
        self._stats: dict[str, int] = {}

    def finish_bundle(self):
        yield beam.pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(self._stats))


class _JoinRows(_Stats):
    """Row path, side input: RawRecord + TableIndex -> joined RawRecord, or a rejection."""

    def __init__(self, table: Table, key: Column):
        self._table, self._key = table, key

    def process(self, record, index):
        joined = self._join(record, index)
        if isinstance(joined, Rejection):
            yield beam.pvalue.TaggedOutput(REJECTED, joined)
        else:
            yield joined

    def _join(self, record, index):
        if record.values is None:
            return record  # unparseable: validation rejects it
        key = self._key_of(record)
        return join_record(record, self._table, key, index.rows.get(key), self._stats)

    def _key_of(self, record: RawRecord) -> Any:
        """The record's typed key (None: absent or not of the key's type)."""
        return None if record.values is None else typed_key(self._key, record.values.get(self._table.key))


class _JoinBatches(_JoinRows):
    """Batched path, side input: RawBatch + TableIndex -> joined RawBatch; rejections aside.

    A batch holding an Arrow table is joined in vectorized steps (:meth:`_join_table`); a batch of
    records (JSONL, label-joined rows) or one whose table carries a table column itself is joined
    record by record with the row path's rules.
    """

    def process(self, batch, index):
        if self._vectorized(batch):
            joined, rejected = self._join_table(batch, index)
        else:
            records, rejected = [], []
            for record in (batch.records if batch.records is not None else batch.iter_records()):
                out = self._join(record, index)
                (rejected if isinstance(out, Rejection) else records).append(out)
            joined = RawBatch(batch.source, records=records) if records else None
        for rejection in rejected:
            yield beam.pvalue.TaggedOutput(REJECTED, rejection)
        if joined is not None:
            yield joined

    def _vectorized(self, batch: RawBatch) -> bool:
        """An Arrow batch that carries no table column itself: joined in vectorized steps."""
        return batch.table is not None and not set(batch.table.column_names) & {c.name for c in self._table.columns}

    def distinct_keys(self, batch: RawBatch) -> list:
        """The batch's distinct typed keys (absent and mistyped ones left out), as Python values."""
        if self._vectorized(batch):
            return pc.unique(self._keys(batch).drop_null()).to_pylist()
        keys = {self._key_of(record) for record in (batch.records if batch.records is not None else batch.iter_records())}
        return sorted(keys - {None}, key=str)

    def _keys(self, batch: RawBatch) -> pa.Array:
        """The batch's typed keys (null where absent or not of the key's type)."""
        array, _ = batch.column(self._table.key)
        if array is None:
            return pa.nulls(batch.num_rows, pa.int64() if self._key.dtype == "int" else pa.string())
        if self._key.dtype == "string":
            if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
                return pc.if_else(pc.equal(pc.utf8_trim_whitespace(array), ""), None, array.cast(pa.string()))
            if pa.types.is_integer(array.type):
                return array.cast(pa.string())
        elif pa.types.is_integer(array.type):
            return array.cast(pa.int64())
        elif pa.types.is_string(array.type):
            try:
                return pc.cast(pc.utf8_trim_whitespace(array), pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # some value is not a plain integer: the row rules for every key
        keys = [typed_key(self._key, v) for v in array.to_pylist()]
        return pa.array(keys, type=pa.int64() if self._key.dtype == "int" else pa.string())

    def _join_table(self, batch: RawBatch, index: TableIndex) -> tuple[RawBatch | None, list[Rejection]]:
        keys = self._keys(batch)  # (rows,)
        index_keys, columns = index.arrays()
        positions = pc.index_in(keys, value_set=index_keys)  # (rows,) row of the index, null: not found
        present = np.asarray(keys.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        found = np.asarray(positions.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        missing = present & ~found
        name = self._table.name
        _add(self._stats, f"{name}.looked_up", int(found.sum()))
        _add(self._stats, f"{name}.missing_key", int(missing.sum()))
        table = batch.table
        for column in self._table.columns:
            table = table.append_column(column.name, columns[column.name].take(positions))
        rejected = []
        lines = batch.lines
        if self._table.missing_key == "reject" and missing.any():
            rejected = [missing_key_rejection(batch.record(i), self._table, keys[i].as_py())
                        for i in np.flatnonzero(missing)]
            kept = ~missing
            table = table.filter(pa.array(kept))
            lines = None if lines is None else [line for line, keep in zip(lines, kept) if keep]
        if table.num_rows == 0:
            return None, rejected
        return RawBatch(batch.source, table=table, lines=lines), rejected


class _TagBatches(_JoinBatches):
    """Grouped join, batched path: ``(batch id, batch)`` on ``batches``, and ``(key, batch id)``
    for each distinct key the batch holds."""

    def process(self, batch):
        batch_id = uuid.uuid4().hex
        yield beam.pvalue.TaggedOutput(BATCHES, (batch_id, batch))
        for key in self.distinct_keys(batch):
            yield key, batch_id


class _RowsToBatches(beam.DoFn):
    """Grouped join, batched path: one key's table rows and the ids of the batches holding it ->
    ``(batch id, (key, source, row))`` per batch; two rows with the key fail the run."""

    def __init__(self, table: Table):
        self._table = table

    def process(self, element):
        key, groups = element
        found = one_row(self._table, key, groups["table"])
        if found is not None:
            for batch_id in groups["batches"]:
                yield batch_id, (key, *found)


class _JoinGroupedBatches(_JoinBatches):
    """Grouped join, batched path: a batch and the table rows of its keys -> the batch joined as
    on the side-input path, against an index of just those rows."""

    def process(self, element):
        _, groups = element
        index = TableIndex(self._table, self._key.dtype, groups["rows"])
        for batch in groups["batch"]:
            yield from super().process(batch, index)


class _KeyImpressions(beam.DoFn):
    """Grouped join: ``(key, record)``; rows without a usable key pass on unjoined (``unkeyed``)."""

    def __init__(self, table: Table, key: Column):
        self._table, self._key = table, key

    def process(self, record):
        key = None if record.values is None else typed_key(self._key, record.values.get(self._table.key))
        if key is None:
            yield beam.pvalue.TaggedOutput("unkeyed", record)
        else:
            yield key, record


class _JoinGroups(_Stats):
    """Grouped join: one key's impressions and table rows -> joined records; rejections aside."""

    def __init__(self, table: Table):
        self._table = table

    def process(self, element):
        key, groups = element
        found = one_row(self._table, key, groups["table"])
        row = found[1] if found is not None else None
        for record in groups["impressions"]:
            joined = join_record(record, self._table, key, row, self._stats)
            if isinstance(joined, Rejection):
                yield beam.pvalue.TaggedOutput(REJECTED, joined)
            else:
                yield joined


def snapshot_line(item, key_name: str) -> str:
    """One line of a table's snapshot file: ``{key: ..., column: value, ...}``."""
    key, (_, row) = item
    return json.dumps({key_name: key, **row}, ensure_ascii=False, allow_nan=False)


class JoinTable(beam.PTransform):
    """Joins one side table to the impressions.

    Args:
        spec: FeatureSpec. The spec (the table's key column is one of its columns).
        table: Table. The table to join.
        join: str. ``side_input`` or ``grouped`` (:func:`choose_join`).
        batch_rows: int. Rows per regrouped batch on the batched path; 0: the row path.

    Applied to ``(impressions, table_records)``: impressions as RawRecords (row path) or
    RawBatches (batched path), the table's rows as RawRecords.

    Returns (from ``expand``):
        ``(joined, rejected, table_rows, table_rejected, stats)``: the impressions in the input's
        form (each once, or rejected), ``missing_key`` Rejections, ``(key, (source, row))`` per
        typed table row, the table rows' Rejections, and one dict of counts
        ``{"<table>.looked_up", "<table>.missing_key", ...}``.
    """

    def __init__(self, spec: FeatureSpec, table: Table, join: str, batch_rows: int):
        super().__init__()
        if join not in JOINS:
            raise ValueError(f"join must be one of {JOINS}, got {join!r}")
        self._table, self._join, self._batch_rows = table, join, batch_rows
        self._columns = table_columns(spec, table)

    def expand(self, pcolls):
        impressions, records = pcolls
        table, key = self._table, self._columns[0]
        typed = records | "TypeRows" >> beam.ParDo(_TypeTableRows(self._columns)).with_outputs(REJECTED, main="rows")
        if self._join == "side_input":
            index = (typed.rows
                     | "Gather" >> beam.combiners.ToList()
                     | "Index" >> beam.Map(lambda rows, t, dtype: TableIndex(t, dtype, [(k, s, r) for k, (s, r) in rows]),
                                           table, key.dtype))
            fn = _JoinBatches(table, key) if self._batch_rows else _JoinRows(table, key)
            joined = impressions | "Join" >> beam.ParDo(fn, beam.pvalue.AsSingleton(index)).with_outputs(
                REJECTED, STATS, main="joined")
            out = joined.joined
        elif self._batch_rows:
            tagged = impressions | "TagBatches" >> beam.ParDo(_TagBatches(table, key)).with_outputs(BATCHES, main="keys")
            wanted = ({"batches": tagged.keys, "table": typed.rows}
                      | "CoGroupKeys" >> beam.CoGroupByKey()
                      | "RowsToBatches" >> beam.ParDo(_RowsToBatches(table)))
            joined = ({"batch": tagged[BATCHES], "rows": wanted}
                      | "CoGroupBatches" >> beam.CoGroupByKey()
                      | "Join" >> beam.ParDo(_JoinGroupedBatches(table, key)).with_outputs(REJECTED, STATS, main="joined"))
            out = joined.joined
        else:
            keyed = impressions | "Key" >> beam.ParDo(_KeyImpressions(table, key)).with_outputs("unkeyed", main="keyed")
            joined = ({"impressions": keyed.keyed, "table": typed.rows}
                      | "CoGroup" >> beam.CoGroupByKey()
                      | "Join" >> beam.ParDo(_JoinGroups(table)).with_outputs(REJECTED, STATS, main="joined"))
            out = (joined.joined, keyed.unkeyed) | "AllImpressions" >> beam.Flatten()
        counts = (
            typed.rows | "CountRows" >> beam.combiners.Count.Globally()
            | "TagRows" >> beam.Map(lambda n, name: {f"{name}.rows": n}, table.name),
            typed[REJECTED] | "CountRejected" >> beam.combiners.Count.Globally()
            | "TagRejected" >> beam.Map(lambda n, name: {f"{name}.rejected_rows": n}, table.name),
            joined[STATS],
        )
        stats = (counts | "StatParts" >> beam.Flatten() | "SumStats" >> beam.CombineGlobally(_sum_stats)
                 | "JoinKind" >> beam.Map(lambda s, name, how: {**s, f"{name}.join": how}, table.name, self._join))
        return out, joined[REJECTED], typed.rows, typed[REJECTED], stats


def nested_stats(flat: Mapping[str, Any], tables: Iterable[Table]) -> dict:
    """``{"movies.looked_up": n, ...}`` -> ``{"movies": {"rows", "rejected_rows", "looked_up",
    "missing_key", "join"}}`` (zeros included), the report's ``tables`` entry."""
    out = {}
    for table in tables:
        counts = {k: 0 for k in ("rows", "rejected_rows", "looked_up", "missing_key")}
        counts.update({k.split(".", 1)[1]: v for k, v in flat.items() if k.split(".", 1)[0] == table.name})
        out[table.name] = counts
    return out


class JoinTables(beam.PTransform):
    """Joins every side table of the spec, one after the other, and writes their snapshots.

    Args:
        spec: FeatureSpec with ``tables``.
        joins: table name -> ``side_input`` or ``grouped``.
        batch_rows: int. The batched path's rows per batch; 0: the row path.
        snapshot_path: callable, table name -> the snapshot file to write (``Workdir.table_snapshot``).
        rejected_prefix: callable, table name -> the prefix of its rejected rows' files.

    Applied to ``(impressions, {table name: RawRecords})``.

    Returns (from ``expand``):
        ``(joined, rejected, stats)``: the impressions in the input's form, the ``missing_key``
        Rejections of every table, one dict for the report's ``tables`` entry.
    """

    def __init__(self, spec: FeatureSpec, joins: Mapping[str, str], batch_rows: int, snapshot_path, rejected_prefix):
        super().__init__()
        self._spec, self._joins, self._batch_rows = spec, dict(joins), batch_rows
        self._snapshot_path, self._rejected_prefix = snapshot_path, rejected_prefix

    def expand(self, pcolls):
        impressions, tables = pcolls
        rejected, stats = [], []
        for table in self._spec.tables:
            impressions, missing, rows, bad_rows, counts = (
                (impressions, tables[table.name])
                | f"Join[{table.name}]" >> JoinTable(self._spec, table, self._joins[table.name], self._batch_rows))
            rows | f"SnapshotLines[{table.name}]" >> beam.Map(snapshot_line, table.key) \
                 | f"WriteSnapshot[{table.name}]" >> beam.io.WriteToText(
                     self._snapshot_path(table.name), num_shards=1, shard_name_template="")
            bad_rows | f"RejectedLines[{table.name}]" >> beam.Map(Rejection.to_json) \
                     | f"WriteRejected[{table.name}]" >> beam.io.WriteToText(
                         self._rejected_prefix(table.name), file_name_suffix=".jsonl")
            rejected.append(missing)
            stats.append(counts)
        all_rejected = tuple(rejected) | "AllMissingKeys" >> beam.Flatten()
        report = (tuple(stats) | "AllStats" >> beam.Flatten() | "Merge" >> beam.CombineGlobally(_merge_dicts)
                  | "Nested" >> beam.Map(nested_stats, self._spec.tables))
        return impressions, all_rejected, report


def _merge_dicts(parts):
    out = {}
    for part in parts:
        out.update(part)
    return out
