"""Recognises the time columns of a sampled log and proposes the time cut of a split on one of them.

A column is time, never a feature, when it holds epoch seconds or milliseconds (ints in the
range of :data:`EPOCH_SECONDS`, from :data:`NAMED_EPOCH_SECONDS_MIN` for a column named as time,
or :data:`EPOCH_MILLIS`), ``yyyymmdd`` dates (ints or digit strings
that are all valid calendar dates), ISO date/time text, or Parquet datetimes. A model fed a
timestamp or a day learns the days of the training data, and in a time-split evaluation every
value is new. :func:`time_cut` proposes the ``split.cutoff`` on the best of them
(:func:`split_time_column`): train on the past, evaluate on the future.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from feature_specs.profile import TYPE_SHARE, ColumnProfile, snake_name

EPOCH_SECONDS = (1e9, 4.2e9)  # 2001-09 .. 2103: int columns in this range may be timestamps
NAMED_EPOCH_SECONDS_MIN = 5e8  # 1985-11: a column named as time may hold seconds from here (MovieLens: 1996)
EPOCH_MILLIS = (1e12, 4.2e12)
DATE_RANGE = (19000101, 21001231)  # yyyymmdd ints
MIN_DAYS_FOR_DAY_CUT = 3  # a sample spanning at least this many days is cut at a midnight (UTC)
DAY_SECONDS = 86_400

# Units, best split key first: what the pipeline compares against split.cutoff.
UNITS = ("seconds", "milliseconds", "datetime", "yyyymmdd", "text")
# The declared type of a split key of each unit (``timestamp`` columns are int seconds; a
# Parquet datetime is read as its seconds); ISO text cannot be compared, so it is not a key.
KEY_TYPES = {"seconds": "timestamp", "milliseconds": "int", "datetime": "timestamp", "yyyymmdd": "int"}

_TIME_NAME = re.compile(r"(^|_)(ts|time|timestamp|date|datetime|epoch|created|updated|day)(_|$)|_at$|time")


@dataclass(frozen=True)
class TimeCut:
    """A proposed time split.

    Args:
        key: str. The time column.
        unit: str. One of :data:`UNITS` (not ``text``).
        cutoff: int. Rows whose key is at or after it go to eval, in the column's own unit.
        eval_share: float. Share of the sampled rows at or after ``cutoff``.
        reason: str. The explanation written as the YAML comment.
    """

    key: str
    unit: str
    cutoff: int
    eval_share: float
    reason: str


def _is_yyyymmdd(number: float) -> bool:
    if not (DATE_RANGE[0] <= number <= DATE_RANGE[1]) or not float(number).is_integer():
        return False
    value = int(number)
    try:
        datetime.date(value // 10_000, value // 100 % 100, value % 100)
    except ValueError:
        return False
    return True


def _iso_share(values: Sequence[str]) -> float:
    parsed = 0
    for value in values:
        try:
            datetime.datetime.fromisoformat(str(value))
            parsed += 1
        except ValueError:
            pass
    return parsed / len(values) if values else 0.0


def time_unit(profile: ColumnProfile) -> str | None:
    """The time unit a column's sampled values are written in (one of :data:`UNITS`), or None."""
    if profile.dtype is None:
        return "datetime" if profile.kinds and profile.kinds.most_common(1)[0][0] == "datetime" else None
    if profile.dtype == "string":
        sampled = [str(v) for v in list(profile.counts)[:200]]
        if len(sampled) < 2:
            return None
        if all(v.isdigit() and len(v) == 8 and _is_yyyymmdd(float(v)) for v in sampled):
            return "yyyymmdd"
        if _iso_share(sampled) >= TYPE_SHARE and any(not v.isdigit() for v in sampled):
            return "text"
        return None
    values = profile.valid_numbers
    if profile.dtype != "int" or values.size == 0:
        return None
    named = bool(_TIME_NAME.search(snake_name(profile.name)))
    low, high = float(values.min()), float(values.max())
    seconds = (NAMED_EPOCH_SECONDS_MIN, EPOCH_SECONDS[1]) if named else EPOCH_SECONDS
    for unit, (lo, hi) in (("seconds", seconds), ("milliseconds", EPOCH_MILLIS)):
        if lo <= low and high <= hi and (named or profile.distinct >= 10):
            return unit
    if all(_is_yyyymmdd(v) for v in np.unique(values)) and (named or profile.distinct >= 2):
        return "yyyymmdd"
    return None


def describe(value: int, unit: str) -> str:
    """``value`` of a time column as a UTC date (and time, unless it is midnight)."""
    if unit == "yyyymmdd":
        return f"{value // 10_000:04d}-{value // 100 % 100:02d}-{value % 100:02d}"
    seconds = value / 1000 if unit == "milliseconds" else value
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d" if moment.time() == datetime.time(0) else "%Y-%m-%d %H:%M:%S UTC")


def time_value(value) -> float:
    """One raw value of a time column in its split unit: seconds for a datetime (as the pipeline
    types Parquet datetimes), the number for ints and digit text; NaN where missing or not a time."""
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        return float(math.floor(moment.timestamp()))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        return float(int(text)) if text.isdigit() else math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else math.nan
    return math.nan


def row_times(raw: Sequence) -> np.ndarray:
    """``(rows,)`` float64 :func:`time_value` of each raw value, NaN where missing."""
    return np.fromiter((time_value(v) for v in raw), dtype=np.float64, count=len(raw))


def _day_starts(low: int, high: int, unit: str) -> list[int]:
    """Every midnight (UTC) after ``low`` and at most ``high``, in the column's unit."""
    if unit == "yyyymmdd":
        start, end = (datetime.date(v // 10_000, v // 100 % 100, v % 100) for v in (low, high))
        return [int((start + datetime.timedelta(days=d)).strftime("%Y%m%d")) for d in range(1, (end - start).days + 1)]
    scale = 1000 if unit == "milliseconds" else 1
    first = (low // scale // DAY_SECONDS + 1) * DAY_SECONDS
    return [s * scale for s in range(first, high // scale + 1, DAY_SECONDS)]


def time_cut(name: str, unit: str, values: np.ndarray, eval_fraction: float, whole: bool) -> TimeCut | None:
    """The cut that sends about ``eval_fraction`` of the sampled rows, the latest ones, to eval.

    Args:
        name: str. The time column.
        unit: str. Its unit (:func:`time_unit`, not ``text``).
        values: ``(rows,)`` int64. Its values in that unit (:func:`time_value`), missing ones dropped.
        eval_fraction: float. The share of rows wanted in eval.
        whole: bool. ``values`` are every row of the log (else its first rows only).

    Returns:
        TimeCut or None: at a midnight (UTC) when the sample spans :data:`MIN_DAYS_FOR_DAY_CUT` days
        or more (the one whose eval share is closest to ``eval_fraction``), else at the quantile;
        None when no cut leaves rows on both sides (one time value only).
    """
    ordered = np.sort(values)
    low, high = int(ordered[0]), int(ordered[-1])
    quantile = int(ordered[min(len(ordered) - 1, int(math.ceil((1 - eval_fraction) * len(ordered))))])
    days = _day_starts(low, high, unit)
    candidates = [quantile]
    if len(days) + 1 >= MIN_DAYS_FOR_DAY_CUT:
        candidates = days
    share = {c: float(np.mean(ordered >= c)) for c in candidates}
    inside = [c for c in candidates if 0.0 < share[c] < 1.0]
    if not inside:
        return None
    cutoff = min(inside, key=lambda c: (abs(share[c] - eval_fraction), -c))
    where = f"all {len(ordered):,} rows with a time" if whole else f"the first {len(ordered):,} rows"
    why = (f"time cut on {name} ({unit}): rows at or after {describe(cutoff, unit)} ({cutoff}) go to eval, "
           f"{share[cutoff]:.0%} of {where}: train on the past ({describe(low, unit)} up to the cut), evaluate on the "
           f"future (the cut to {describe(high, unit)}), as a served model meets rows logged after its training")
    if not whole:
        why += ("; only the first rows were read: the log goes on past them, so move the cutoff until eval holds "
                "the latest days")
    return TimeCut(name, unit, cutoff, share[cutoff], why)


def split_time_column(units: dict[str, str]) -> str | None:
    """The time column to split on, by unit (:data:`UNITS` order), or None when none can be compared."""
    keys = [name for name, unit in units.items() if unit in KEY_TYPES]
    return min(keys, key=lambda name: UNITS.index(units[name])) if keys else None
