"""Label join: impressions without labels + event logs keyed by impression id -> labelled rows.

With a ``sources:`` section in the spec, the impressions carry no label columns; each event source
(e.g. clicks, dwell events) derives one label. Impressions and events are keyed by the impression
id and joined with ``CoGroupByKey``. An event counts for an impression when
``0 <= event time - impression time <= attribution_window_seconds``; the label is the source's
aggregate (``flag``, ``count``, ``sum`` or ``max`` of a field) over those events, 0 when there are
none. Events of ids without an impression, and events that do not parse or lack an id or time, are
counted and written aside (``Workdir.orphan_events_pattern``); events outside the window are
counted. Impressions that do not parse or lack an id pass through unchanged, so validation
rejects them with their reason: the join loses no impression row.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from feature_specs.spec import EventSource, Sources
from pipelines.records import RawRecord, json_safe

ORPHANS = "orphans"
STATS = "stats"
NO_IMPRESSION = "no_impression"
BAD_EVENT = "bad_event"


def _seconds(value: Any) -> float | None:
    """A time value as seconds, or None when it is not a finite number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number(value: Any) -> float | None:
    return _seconds(value)


def aggregate_label(source: EventSource, events: list[Mapping[str, Any]]) -> int | float:
    """The label of one impression from its in-window events (already filtered)."""
    if source.aggregate == "flag":
        return 1 if events else 0
    if source.aggregate == "count":
        return len(events)
    values = [v for v in (_number(e.get(source.value)) for e in events) if v is not None]
    if not values:
        return 0.0
    return float(sum(values)) if source.aggregate == "sum" else float(max(values))


def orphan_json(source_name: str, record: RawRecord, reason: str, message: str) -> str:
    """One line of the orphan-events file."""
    return json.dumps({"event_source": source_name, "source": record.source, "row": json_safe(record.row),
                       "reason": reason, "message": message}, ensure_ascii=False, allow_nan=False)


def _add(stats: dict, key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n


class _KeyImpressions(beam.DoFn):
    """``(id, record)`` for joinable impressions; the rest pass through on ``unkeyed``."""

    def __init__(self, impression_id: str):
        self._id = impression_id

    def process(self, record):
        key = None if record.values is None else record.values.get(self._id)
        if key is None or (isinstance(key, str) and not key.strip()):
            yield beam.pvalue.TaggedOutput("unkeyed", record)
        else:
            yield str(key).strip(), record


class _KeyEvents(beam.DoFn):
    """``(id, record)`` for events with an id and a time; the rest go to ``orphans``."""

    def __init__(self, source: EventSource, impression_id: str):
        self._source = source
        self._id = impression_id

    def process(self, record):
        name = self._source.name
        if record.values is None:
            yield beam.pvalue.TaggedOutput(ORPHANS, orphan_json(name, record, BAD_EVENT, record.error or "does not parse"))
            return
        key = record.values.get(self._id)
        if key is None or (isinstance(key, str) and not key.strip()):
            yield beam.pvalue.TaggedOutput(ORPHANS, orphan_json(name, record, BAD_EVENT, f"no {self._id}"))
        elif _seconds(record.values.get(self._source.timestamp)) is None:
            yield beam.pvalue.TaggedOutput(
                ORPHANS, orphan_json(name, record, BAD_EVENT, f"{self._source.timestamp} is not a number"))
        else:
            yield str(key).strip(), record


class _Attribute(beam.DoFn):
    """Labels each impression of one id from that id's events; orphans and per-bundle stats aside."""

    def __init__(self, sources: Sources):
        self._sources = sources

    def start_bundle(self):
        self._stats: dict[str, int] = {}

    def process(self, element):
        _, groups = element
        impressions = list(groups["impressions"])
        if not impressions:
            for source in self._sources.events:
                for event in groups[source.name]:
                    _add(self._stats, f"orphan_events_{source.name}")
                    yield beam.pvalue.TaggedOutput(ORPHANS, orphan_json(
                        source.name, event, NO_IMPRESSION,
                        f"no impression with {self._sources.impression_id}={event.values.get(self._sources.impression_id)!r}"))
            return
        events = {source.name: [e.values for e in groups[source.name]] for source in self._sources.events}
        window = self._sources.attribution_window_seconds
        for impression in impressions:
            shown = _seconds(impression.values.get(self._sources.timestamp))
            values = dict(impression.values)
            _add(self._stats, "joined_impressions")
            for source in self._sources.events:
                if shown is None:
                    continue  # no label: validation rejects the row for its bad timestamp
                inside = []
                for event in events[source.name]:
                    if 0 <= _seconds(event[source.timestamp]) - shown <= window:
                        inside.append(event)
                    else:
                        _add(self._stats, f"outside_window_{source.name}")
                _add(self._stats, f"attributed_events_{source.name}", len(inside))
                values[source.label] = aggregate_label(source, inside)
            yield RawRecord(impression.source, impression.row, values)

    def finish_bundle(self):
        yield beam.pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(self._stats))


def _sum_stats(parts):
    total: dict[str, int] = {}
    for part in parts:
        for key, n in part.items():
            _add(total, key, n)
    return dict(sorted(total.items()))


class JoinLabels(beam.PTransform):
    """Derives label columns of impressions from event sources.

    Args:
        sources: Sources. The spec's ``sources`` section.

    Applied to a dict ``{"impressions": records, <source name>: records, ...}`` of
    :class:`RawRecord` PCollections.

    Returns (from ``expand``):
        ``(labelled, orphans, stats)``: RawRecords (every impression, once), orphan-event JSON
        lines, and one dict of join counts.
    """

    def __init__(self, sources: Sources):
        super().__init__()
        self._sources = sources

    def expand(self, pcolls):
        keyed = pcolls["impressions"] | "KeyImpressions" >> beam.ParDo(
            _KeyImpressions(self._sources.impression_id)).with_outputs("unkeyed", main="keyed")
        groups, bad = {"impressions": keyed.keyed}, []
        for source in self._sources.events:
            events = pcolls[source.name] | f"Key[{source.name}]" >> beam.ParDo(
                _KeyEvents(source, self._sources.impression_id)).with_outputs(ORPHANS, main="keyed")
            groups[source.name] = events.keyed
            bad.append(events[ORPHANS])
        joined = (groups | "CoGroup" >> beam.CoGroupByKey()
                  | "Attribute" >> beam.ParDo(_Attribute(self._sources)).with_outputs(ORPHANS, STATS, main="rows"))
        labelled = (joined.rows, keyed.unkeyed) | "AllImpressions" >> beam.Flatten()
        orphans = tuple(bad) + (joined[ORPHANS],) | "AllOrphans" >> beam.Flatten()
        bad_counts = [b | f"CountBad{i}" >> beam.combiners.Count.Globally()
                      | f"TagBad{i}" >> beam.Map(lambda n, name: {f"bad_events_{name}": n} if n else {}, s.name)
                      for i, (b, s) in enumerate(zip(bad, self._sources.events))]
        stats = ((joined[STATS], *bad_counts) | "StatParts" >> beam.Flatten()
                 | "SumStats" >> beam.CombineGlobally(_sum_stats))
        return labelled, orphans, stats
