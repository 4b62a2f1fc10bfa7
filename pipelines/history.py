"""Behaviour histories: list features the pipeline derives from the log, without leakage.

A feature with a ``history:`` block (:class:`feature_specs.spec.HistorySpec`) holds, for each
impression, the ``item`` values of the same ``user``'s earlier positive impressions (``positive``
> 0), the newest ``list.max_length`` of them, newest first. "Earlier" is strict: an impression
never sees one with the same or a later ``time``, so rows logged in the same second (bulk
imports, one request's candidates) never see each other, and nothing from the impression's own
outcome or the future reaches its features.

How it runs in Beam (:class:`AddHistories`), after validation (only valid rows count) and before
the split (an eval row's history holds the train rows before it, as it would at serving):

1. every valid positive row emits ``((feature, user), (time, item))``;
2. ``GroupByKey`` gathers each user's positives and sorts them by ``(time, item)`` into a
   :class:`Timeline` (times as an int64 array, so a lookup is one binary search);
3. each valid row (or Arrow table of rows on the batched path) looks up its user's timeline in a
   side input (``AsDict``) and takes the items strictly before its time.

The side input holds the positives only (about the click-through rate times the rows: ~250 MB
for 10M positives), not the impressions, which flow through once. A log whose positives do not
fit one worker's memory needs a key-grouped join of the impressions by user instead; not built.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from feature_specs.spec import Feature
from pipelines.validate_batches import arrow_type


@dataclass(frozen=True)
class Timeline:
    """One user's positive impressions for one history, sorted by ``(time, item)``.

    Args:
        times: np.ndarray of int64, shape ``(n,)``, non-decreasing.
        items: list of the ``n`` items (str or int), in the same order.
    """

    times: np.ndarray
    items: list

    @classmethod
    def of(cls, events: Iterable[tuple[int, Any]]) -> "Timeline":
        ordered = sorted(events)
        return cls(np.array([t for t, _ in ordered], dtype=np.int64), [item for _, item in ordered])

    def before(self, time: int, length: int) -> list:
        """The items strictly before ``time``, the newest ``length`` of them, newest first."""
        end = bisect.bisect_left(self.times, time)
        return self.items[max(0, end - length):end][::-1]


def _positive_events(row: Mapping[str, Any], features: Sequence[Feature]):
    """``((feature, user), (time, item))`` for each history a valid row enters."""
    for feature in features:
        history = feature.history
        if row[history.positive] > 0:
            yield (feature.name, row[history.user]), (int(row[history.time]), row[history.item])


def _table_positive_events(table: pa.Table, features: Sequence[Feature]):
    """:func:`_positive_events` of every row of a validated Arrow table."""
    for feature in features:
        history = feature.history
        positive = np.flatnonzero(table.column(history.positive).to_numpy() > 0)
        if not positive.size:
            continue
        rows = pa.array(positive)
        users = table.column(history.user).take(rows).to_pylist()
        times = table.column(history.time).take(rows).to_pylist()
        items = table.column(history.item).take(rows).to_pylist()
        for user, time, item in zip(users, times, items):
            yield (feature.name, user), (int(time), item)


def _histories(users: list, times: list, feature: Feature, timelines: Mapping) -> list[list]:
    length = feature.list.max_length
    out = []
    for user, time in zip(users, times):
        timeline = timelines.get((feature.name, user))
        out.append(timeline.before(int(time), length) if timeline is not None else [])
    return out


def _with_histories(row: dict, features: Sequence[Feature], timelines: Mapping) -> dict:
    row = dict(row)
    for feature in features:
        history = feature.history
        row[feature.name] = _histories([row[history.user]], [row[history.time]], feature, timelines)[0]
    return row


def _table_with_histories(table: pa.Table, features: Sequence[Feature], timelines: Mapping) -> pa.Table:
    for feature in features:
        history = feature.history
        values = _histories(table.column(history.user).to_pylist(), table.column(history.time).to_pylist(),
                            feature, timelines)
        table = table.append_column(pa.field(feature.name, arrow_type(feature)), pa.array(values, arrow_type(feature)))
    return table


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
        timelines = (valid
                     | "PositiveEvents" >> beam.FlatMap(events, self._features)
                     | "ByUser" >> beam.GroupByKey()
                     | "Timelines" >> beam.MapTuple(lambda key, items: (key, Timeline.of(items))))
        add = _table_with_histories if self._batched else _with_histories
        return valid | "Histories" >> beam.Map(add, self._features, beam.pvalue.AsDict(timelines))
