"""Behaviour histories: list features the pipeline derives from the log, without leakage.

A feature with a ``history:`` block (:class:`feature_specs.spec.HistorySpec`) holds, for each
impression, the ``item`` values of the same ``user``'s earlier positive impressions (``positive``
> 0), the newest ``list.max_length`` of them, newest first. "Earlier" is strict: an impression
never sees one with the same or a later ``time``, so rows logged in the same second (bulk
imports, one request's candidates) never see each other, and nothing from the impression's own
outcome or the future reaches its features.

How it runs in Beam (:class:`AddHistories`), after validation (only valid rows count) and before
the split (an eval row's history holds the train rows before it, as it would at serving):

1. every valid positive row emits ``(feature, user, time, item)``;
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

from feature_specs.spec import Feature
from pipelines.validate_batches import arrow_type


@dataclass(frozen=True)
class HistoryIndex:
    """One history feature's positives, every user's sorted by ``(time, item)``, back to back.

    Args:
        segments: user -> segment number (users in sorted order; a user without a positive has
            none).
        starts: np.ndarray of int64, shape ``(users + 1,)``: where each segment starts in ``keys``.
        times: np.ndarray of int64, shape ``(t,)``: the distinct times of the positives, sorted.
        keys: np.ndarray of int64, shape ``(n,)``, sorted: ``segment * (t + 1) + rank of the
            time among ``times```` for each positive.
        items: pa.Array of the ``n`` items, in the order of ``keys``.
    """

    segments: dict
    starts: np.ndarray
    times: np.ndarray
    keys: np.ndarray
    items: pa.Array

    @classmethod
    def of(cls, events: Sequence[tuple[Any, int, Any]], item_type: pa.DataType) -> "HistoryIndex":
        """The index of ``(user, time, item)`` events, ``item_type`` the items' Arrow type."""
        users, times, items = (list(column) for column in zip(*events)) if events else ([], [], [])
        segments = {user: number for number, user in enumerate(sorted(set(users)))}
        table = pa.table({"segment": np.fromiter((segments[u] for u in users), dtype=np.int64, count=len(users)),
                          "time": np.asarray(times, dtype=np.int64), "item": pa.array(items, item_type)})
        order = pc.sort_indices(table, sort_keys=[("segment", "ascending"), ("time", "ascending"),
                                                  ("item", "ascending")])
        table = table.take(order)
        segment, time = table.column("segment").to_numpy(), table.column("time").to_numpy()
        distinct = np.unique(time)
        starts = np.searchsorted(segment, np.arange(len(segments) + 1)).astype(np.int64)
        keys = segment * (len(distinct) + 1) + np.searchsorted(distinct, time)
        return cls(segments, starts, distinct, keys, table.column("item").combine_chunks())

    def histories(self, users: Sequence, times: np.ndarray, length: int) -> pa.ListArray:
        """Each row's newest ``length`` items strictly before its time, newest first.

        Args:
            users: the rows' users, ``(rows,)``.
            times: np.ndarray of int64, ``(rows,)``.
            length: int. The most items a row keeps.

        Returns:
            pa.ListArray, ``(rows,)``, of the items' type.
        """
        segment = np.fromiter((self.segments.get(u, -1) for u in users), dtype=np.int64, count=len(users))
        known = segment >= 0
        first = np.where(known, self.starts[np.maximum(segment, 0)], 0)
        query = np.maximum(segment, 0) * (len(self.times) + 1) + np.searchsorted(self.times, times, side="left")
        end = np.where(known, np.searchsorted(self.keys, query, side="left"), 0)
        count = np.minimum(end - first, length)
        offsets = np.zeros(len(users) + 1, dtype=np.int32)
        np.cumsum(count, out=offsets[1:])
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], count)
        return pa.ListArray.from_arrays(pa.array(offsets), self.items.take(pa.array(np.repeat(end, count) - 1 - within)))


def _positive_events(row: Mapping[str, Any], features: Sequence[Feature]):
    """``(feature, user, time, item)`` for each history a valid row enters."""
    for feature in features:
        history = feature.history
        if row[history.positive] > 0:
            yield feature.name, row[history.user], int(row[history.time]), row[history.item]


def _table_positive_events(table: pa.Table, features: Sequence[Feature]):
    """:func:`_positive_events` of every row of a validated Arrow table."""
    for feature in features:
        history = feature.history
        rows = pa.array(np.flatnonzero(table.column(history.positive).to_numpy() > 0))
        columns = [table.column(name).take(rows).to_pylist() for name in (history.user, history.time, history.item)]
        for user, time, item in zip(*columns):
            yield feature.name, user, int(time), item


def _indexes(events: list, features: Sequence[Feature]) -> dict[str, HistoryIndex]:
    """feature -> :class:`HistoryIndex` of its events."""
    by_feature = {feature.name: [] for feature in features}
    for name, user, time, item in events:
        by_feature[name].append((user, time, item))
    return {f.name: HistoryIndex.of(by_feature[f.name], arrow_type(f).value_type) for f in features}


def _table_with_histories(table: pa.Table, features: Sequence[Feature], indexes: Mapping[str, HistoryIndex]) -> pa.Table:
    for feature in features:
        history = feature.history
        values = indexes[feature.name].histories(table.column(history.user).to_pylist(),
                                                 table.column(history.time).to_numpy(), feature.list.max_length)
        table = table.append_column(pa.field(feature.name, arrow_type(feature)), values)
    return table


def _with_histories(row: dict, features: Sequence[Feature], indexes: Mapping[str, HistoryIndex]) -> dict:
    row = dict(row)
    for feature in features:
        history = feature.history
        values = indexes[feature.name].histories([row[history.user]], np.array([row[history.time]], dtype=np.int64),
                                                 feature.list.max_length)
        row[feature.name] = values[0].as_py()
    return row


class AddHistories(beam.PTransform):
    """Adds each history feature's column to the valid rows (see the module docstring).

    Args:
        features: the spec's ``history_features`` (non-empty).
        batched: bool. Elements are Arrow tables of valid rows (the batched path) rather than
            dicts ``{column: typed value}`` (the row path).

    Returns (from ``expand``): the same elements with one more column per history feature, a
    list of the item column's type (``[]`` for a row without an earlier positive).
    """

    def __init__(self, features: Sequence[Feature], batched: bool):
        super().__init__()
        if not features:
            raise ValueError("AddHistories needs at least one history feature")
        self._features = tuple(features)
        self._batched = batched

    def expand(self, valid):
        events = _table_positive_events if self._batched else _positive_events
        indexes = (valid
                   | "PositiveEvents" >> beam.FlatMap(events, self._features)
                   | "Gather" >> beam.combiners.ToList()
                   | "Index" >> beam.Map(_indexes, self._features))
        add = _table_with_histories if self._batched else _with_histories
        return valid | "Histories" >> beam.Map(add, self._features, beam.pvalue.AsSingleton(indexes))
