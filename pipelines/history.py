"""Behaviour histories: list features the pipeline derives from the log, without leakage.

A feature with a ``history:`` block (:class:`feature_specs.spec.HistorySpec`) holds, for each
impression, the ``item`` values of the same ``user``'s earlier positive impressions (``positive``
> 0), the newest ``list.max_length`` of them, newest first. "Earlier" is strict: an impression
never sees one with the same or a later ``time``, so rows logged in the same second (bulk
imports, one request's candidates) never see each other, and nothing from the impression's own
outcome or the future reaches its features.

How it runs in Beam (:class:`AddHistories`), after validation (only valid rows count) and before
the split (an eval row's history holds the train rows before it, as it would at serving):

1. the valid positive rows become events ``(user, time, item)`` (an Arrow table per batch on
   the batched path);
2. they are gathered (``ToList``) into one :class:`HistoryIndex` per feature: every user's
   positives sorted by ``(time, item)``, back to back, with sortable int64 keys
   ``segment * (distinct times + 1) + rank of the time``;
3. each valid row (or Arrow table of rows on the batched path) reads the index as a side input
   (``AsSingleton``); one ``searchsorted`` of the rows' keys finds, for all rows at once, where
   their user's positives strictly before their time end, and the newest ``max_length`` are
   taken with one Arrow ``take``.

The side input holds the positives only (about the click-through rate times the rows; a few
tens of bytes each), not the impressions, which flow through once. A log whose positives do not
fit one worker's memory would need a key-grouped join of the impressions by user instead; not
built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_specs.spec import Column, Feature
from pipelines.validate_batches import arrow_type


@dataclass(frozen=True)
class HistoryIndex:
    """One history feature's positives, every user's sorted by ``(time, item)``, back to back.

    Arrays only (no Python containers), so the side input is cheap to pickle and to size.

    Args:
        users: pa.Array of the distinct users with a positive, sorted; user ``users[s]`` owns
            segment ``s``.
        starts: np.ndarray of int64, shape ``(len(users) + 1,)``: where each segment starts in ``keys``.
        times: np.ndarray of int64, shape ``(t,)``: the distinct times of the positives, sorted.
        keys: np.ndarray of int64, shape ``(n,)``, sorted: ``segment * (t + 1) + rank of the
            time among times`` for each positive.
        items: pa.Array of the ``n`` items, in the order of ``keys``.
    """

    users: pa.Array
    starts: np.ndarray
    times: np.ndarray
    keys: np.ndarray
    items: pa.Array

    @classmethod
    def of(cls, events: pa.Table) -> "HistoryIndex":
        """The index of the positives in ``events``, a table of ``user``, ``time`` (int64) and ``item``."""
        users = pc.unique(events.column("user").combine_chunks())
        users = users.take(pc.sort_indices(users))
        segment = pc.index_in(events.column("user"), value_set=users)
        table = pa.table({"segment": segment, "time": events.column("time"), "item": events.column("item")})
        table = table.take(pc.sort_indices(table, sort_keys=[("segment", "ascending"), ("time", "ascending"),
                                                             ("item", "ascending")]))
        segment = table.column("segment").to_numpy().astype(np.int64)
        time = table.column("time").to_numpy()
        distinct = np.unique(time)
        starts = np.searchsorted(segment, np.arange(len(users) + 1)).astype(np.int64)
        keys = segment * (len(distinct) + 1) + np.searchsorted(distinct, time)
        return cls(users, starts, distinct, keys, table.column("item").combine_chunks())

    def histories(self, users: pa.Array, times: np.ndarray, length: int) -> pa.ListArray:
        """Each row's newest ``length`` items strictly before its time, newest first.

        Args:
            users: pa.Array, ``(rows,)``: the rows' users.
            times: np.ndarray of int64, ``(rows,)``.
            length: int. The most items a row keeps.

        Returns:
            pa.ListArray, ``(rows,)``, of the items' type.
        """
        segment = pc.fill_null(pc.index_in(users, value_set=self.users), -1).to_numpy().astype(np.int64)
        known = segment >= 0
        first = np.where(known, self.starts[np.maximum(segment, 0)], 0)
        query = np.maximum(segment, 0) * (len(self.times) + 1) + np.searchsorted(self.times, times, side="left")
        end = np.where(known, np.searchsorted(self.keys, query, side="left"), 0)
        count = np.minimum(end - first, length)
        offsets = np.zeros(len(segment) + 1, dtype=np.int32)
        np.cumsum(count, out=offsets[1:])
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], count)
        return pa.ListArray.from_arrays(pa.array(offsets), self.items.take(pa.array(np.repeat(end, count) - 1 - within)))


def _event_schema(feature: Feature, columns: Mapping[str, Column]) -> pa.Schema:
    history = feature.history
    return pa.schema([("user", arrow_type(columns[history.user])), ("time", pa.int64()),
                      ("item", arrow_type(columns[history.item]))])


def _row_events(row: Mapping[str, Any], features: Sequence[Feature]):
    """``(feature, (user, time, item))`` for each history a valid row (a dict) enters."""
    for feature in features:
        history = feature.history
        if row[history.positive] > 0:
            yield feature.name, (row[history.user], int(row[history.time]), row[history.item])


def _table_events(table: pa.Table, features: Sequence[Feature]) -> list:
    """``[(feature, events table)]``: the positives of a validated Arrow table, one table per feature."""
    out = []
    for feature in features:
        history = feature.history
        positive = pa.array(np.flatnonzero(table.column(history.positive).to_numpy() > 0))
        if len(positive):
            out.append((feature.name, pa.table({
                "user": table.column(history.user).take(positive),
                "time": pc.cast(table.column(history.time).take(positive), pa.int64()),
                "item": table.column(history.item).take(positive)})))
    return out


def _indexes(events: list, features: Sequence[Feature], columns: Mapping[str, Column]) -> dict[str, HistoryIndex]:
    """feature -> :class:`HistoryIndex` of its events: ``(feature, (user, time, item))`` from rows,
    or ``(feature, events table)`` from batches."""
    tables, rows = {f.name: [] for f in features}, {f.name: [] for f in features}
    for name, event in events:
        (tables if isinstance(event, pa.Table) else rows)[name].append(event)
    indexes = {}
    for feature in features:
        schema = _event_schema(feature, columns)
        parts = [t.cast(schema) for t in tables[feature.name]]
        if rows[feature.name] or not parts:
            users, times, items = zip(*rows[feature.name]) if rows[feature.name] else ((), (), ())
            parts.append(pa.table({"user": list(users), "time": list(times), "item": list(items)}, schema=schema))
        indexes[feature.name] = HistoryIndex.of(pa.concat_tables(parts))
    return indexes


def _table_with_histories(table: pa.Table, features: Sequence[Feature], indexes: Mapping[str, HistoryIndex]) -> pa.Table:
    for feature in features:
        history = feature.history
        values = indexes[feature.name].histories(table.column(history.user).combine_chunks(),
                                                 table.column(history.time).to_numpy(), feature.list.max_length)
        table = table.append_column(pa.field(feature.name, arrow_type(feature)), values)
    return table


def _with_histories(row: dict, features: Sequence[Feature], indexes: Mapping[str, HistoryIndex]) -> dict:
    row = dict(row)
    for feature in features:
        history = feature.history
        index = indexes[feature.name]
        values = index.histories(pa.array([row[history.user]], index.users.type),
                                 np.array([row[history.time]], dtype=np.int64), feature.list.max_length)
        row[feature.name] = values[0].as_py()
    return row


class AddHistories(beam.PTransform):
    """Adds each history feature's column to the valid rows (see the module docstring).

    Args:
        features: the spec's ``history_features`` (non-empty).
        columns: the spec's ``all_columns`` (the users' and items' types).
        batched: bool. Elements are Arrow tables of valid rows (the batched path) rather than
            dicts ``{column: typed value}`` (the row path).

    Returns (from ``expand``): the same elements with one more column per history feature, a
    list of the item column's type (``[]`` for a row without an earlier positive).
    """

    def __init__(self, features: Sequence[Feature], columns: Sequence[Column], batched: bool):
        super().__init__()
        if not features:
            raise ValueError("AddHistories needs at least one history feature")
        self._features = tuple(features)
        self._columns = {c.name: c for c in columns}
        self._batched = batched

    def expand(self, valid):
        if self._batched:  # one element per batch and feature, not per positive row
            events = valid | "PositiveEvents" >> beam.FlatMap(_table_events, self._features)
        else:
            events = valid | "PositiveEvents" >> beam.FlatMap(_row_events, self._features)
        indexes = (events
                   | "Gather" >> beam.combiners.ToList()
                   | "Index" >> beam.Map(_indexes, self._features, self._columns))
        add = _table_with_histories if self._batched else _with_histories
        return valid | "Histories" >> beam.Map(add, self._features, beam.pvalue.AsSingleton(indexes))
