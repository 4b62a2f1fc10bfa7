"""Side-table lookups inside the SavedModel: a request may send only the ids.

Why inside the SavedModel: TF Serving (and KServe, Triton's TF backend) serve a version directory
and nothing beside it. Keeping each side table's snapshot (the typed rows the pipeline joined,
``artifacts/tables/<name>.jsonl``) in the version as ``tf.lookup.StaticHashTable`` (key -> row)
and per column a non-trainable variable of values means the table travels with the model it was
trained with: a new version brings its own snapshot, rollback brings the old one back, and no
side store has to be kept in step with the versions. The cost is the table's size in the
SavedModel and that a table updated between versions needs a new export.

Each served table feature is filled per row, in both signatures, before the model runs:

- sent (the request's own value) wins: in ``serving_default`` a feature present in the
  tf.Example, in ``predict_raw`` a value other than the "not sent" marker :data:`NOT_SENT`
  (``""`` for strings, the int64 minimum for ints, NaN for floats; a list row of only padding:
  the empty list). None of these can be a value the pipeline writes (blank text is missing,
  NaN is rejected), so they are free to mean "look it up". The REST ``:rank`` fills them for
  features a candidate leaves out;
- else looked up by the row's key; a key the snapshot lacks takes the column's ``default``
  (``missing_key: default``, the value the pipeline gave such rows) and, for ``missing_key:
  reject`` (no default), fails the request with INVALID_ARGUMENT naming the table and key.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import tensorflow as tf

from feature_specs.spec import LIST_PADDING, Column, FeatureSpec, Table
from feature_specs.tensors import TF_DTYPES, pad_list

NOT_SENT = {"string": "", "int": -(2**63), "float": float("nan")}  # predict_raw: "look this feature up"


def read_snapshot(path: str) -> list[dict]:
    """A table snapshot file (one JSON object per line) as rows."""
    with tf.io.gfile.GFile(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def not_sent(column: Column, values: tf.Tensor) -> tf.Tensor:
    """Bool ``[batch]``: the rows of ``values`` (``[batch, 1]`` or ``[batch, max_length]``) that
    hold the "not sent" marker (a list: only padding)."""
    if column.list is not None:
        return tf.reduce_all(tf.equal(values, LIST_PADDING[column.dtype]), axis=1)
    flat = tf.reshape(values, [-1])
    if column.dtype == "float":
        return tf.math.is_nan(flat)
    return tf.equal(flat, tf.constant(NOT_SENT[column.dtype], TF_DTYPES[column.dtype]))


class _Table(tf.Module):
    """One table's snapshot: key -> row index, and each column's values with one row past the end
    for a missing key (the column's default, the empty list, or the marker under ``reject``)."""

    def __init__(self, table: Table, key: Column, rows: Sequence[Mapping]):
        super().__init__(name=f"table_{table.name}")
        self.table, self.key_column = table, key
        keys = [row[table.key] for row in rows]
        self.size = len(keys)
        self.index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys, TF_DTYPES[key.dtype]),
                                                tf.range(self.size, dtype=tf.int64)),
            default_value=self.size)
        self.values = {}
        for column in table.columns:
            missing = [] if column.list is not None else (
                column.default if column.default is not None else NOT_SENT[column.dtype])
            cells = [row[column.name] for row in rows] + [missing]
            if column.list is not None:
                values = pad_list(column, tf.ragged.constant(cells, TF_DTYPES[column.dtype],
                                                             inner_shape=()) if any(cells) else
                                  tf.zeros([len(cells), 0], TF_DTYPES[column.dtype]))
            else:
                values = tf.reshape(tf.constant(cells, TF_DTYPES[column.dtype]), [-1, 1])
            self.values[column.name] = tf.Variable(values, trainable=False, name=column.name)

    def fill(self, inputs: dict) -> dict:
        keys = tf.reshape(inputs[self.table.key], [-1])  # (batch,)
        rows = self.index.lookup(keys)  # (batch,) self.size where missing
        out = dict(inputs)
        for column in self.table.columns:
            given = inputs[column.name]  # (batch, 1) or (batch, max_length)
            ask = not_sent(column, given)  # (batch,)
            if self.table.missing_key == "reject":
                missing = tf.logical_and(ask, tf.equal(rows, self.size))
                tf.debugging.assert_equal(
                    tf.reduce_any(missing), False,
                    message=f"a key is not in side table {self.table.name!r} (missing_key: reject): "
                            f"send {column.name!r} in the request")
            looked_up = tf.gather(self.values[column.name], rows)
            out[column.name] = tf.where(tf.reshape(ask, [-1, 1]), looked_up, given)
        return out


class TableLookups(tf.Module):
    """Every side table of ``spec``, tracked by the export archive (the snapshots are saved in it).

    Args:
        spec: FeatureSpec with ``tables``.
        snapshots: table name -> its rows (:func:`read_snapshot`), each ``{key: k, column: value}``.

    ``fill(inputs)``: the model's inputs (``[batch, 1]`` per scalar feature, ``[batch,
    max_length]`` per list) with each table feature's "not sent" rows looked up.
    """

    def __init__(self, spec: FeatureSpec, snapshots: Mapping[str, Sequence[Mapping]]):
        super().__init__(name="side_tables")
        missing = [t.name for t in spec.tables if t.name not in snapshots]
        if missing:
            raise ValueError(f"no snapshot of side table(s) {', '.join(missing)} to export")
        self.tables = [_Table(t, spec.column(t.key), snapshots[t.name]) for t in spec.tables]

    def fill(self, inputs: dict) -> dict:
        for table in self.tables:
            inputs = table.fill(inputs)
        return inputs
