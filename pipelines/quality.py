"""The data-quality profile: per-column missing counts, distinct values, ranges, unknown columns.

Validation fills one :class:`Profile` per bundle while it checks rows (no extra element per row)
and emits it at the end of the bundle; :class:`MergeProfiles` combines them into one. Distinct
values are exact up to :data:`EXACT_LIMIT` per column, then estimated with a k-minimum-values
sketch (relative error about 1/sqrt(k), ~3% for k = 1024) over a stable 64-bit hash (pandas'
``hash_array``, vectorized), so the estimate is the same on every worker and runner.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import apache_beam as beam
import numpy as np
from pandas.util import hash_array

EXACT_LIMIT = 4096
SKETCH_SIZE = 1024
_HASH_RANGE = 2.0**64


def stable_hashes(values: Iterable[Any]) -> np.ndarray:
    """A 64-bit hash of each value's text (strings as they are, other values by ``repr``), the same
    in every process and on every runner (SipHash with pandas' fixed key).

    Args:
        values: any iterable of n scalars.

    Returns:
        np.ndarray of uint64, shape (n,).
    """
    texts = np.fromiter((v if isinstance(v, str) else repr(v) for v in values), dtype=object)
    return hash_array(texts, categorize=False)


class DistinctSketch:
    """Counts distinct values: an exact set while small, then a KMV sketch of the smallest hashes.

    Values are buffered and hashed a block at a time (vectorized), so :meth:`add` (the row path)
    and :meth:`add_many` (the batched path) cost little per value; the result depends only on the
    set of values added, never on their order or on how they were split between sketches.
    """

    __slots__ = ("exact", "hashes", "_pending")

    def __init__(self):
        self.exact: set | None = set()
        self.hashes = np.empty(0, dtype=np.uint64)  # the SKETCH_SIZE smallest, sorted, once not exact
        self._pending: list = []

    def add(self, value: Any) -> None:
        if self.exact is not None:
            self.exact.add(value)
            if len(self.exact) > EXACT_LIMIT:
                self._to_hashes()
            return
        self._pending.append(value)
        if len(self._pending) >= EXACT_LIMIT:
            self._flush()

    def add_many(self, values: Iterable[Any]) -> None:
        """Adds every value of ``values`` (e.g. ``pc.unique(column).to_pylist()``)."""
        if self.exact is not None:
            self.exact.update(values)
            if len(self.exact) > EXACT_LIMIT:
                self._to_hashes()
            return
        self._add_hashes(stable_hashes(values))

    def _to_hashes(self) -> None:
        values, self.exact = self.exact, None
        self._add_hashes(stable_hashes(values))

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._add_hashes(stable_hashes(pending))

    def _add_hashes(self, hashes: np.ndarray) -> None:
        self.hashes = np.union1d(self.hashes, hashes)[:SKETCH_SIZE]

    def merge(self, other: "DistinctSketch") -> None:
        other._flush()
        if other.exact is not None:
            self.add_many(other.exact)
            return
        if self.exact is not None:
            self._to_hashes()
        self._add_hashes(other.hashes)

    def estimate(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        self._flush()
        if len(self.hashes) < SKETCH_SIZE:
            return len(self.hashes)
        return round((SKETCH_SIZE - 1) * _HASH_RANGE / (int(self.hashes[-1]) + 1))

    @property
    def is_exact(self) -> bool:
        return self.exact is not None

    def __getstate__(self):
        self._flush()
        return self.exact, self.hashes

    def __setstate__(self, state):
        self.exact, self.hashes = state
        self._pending = []


class Profile:
    """Counts over the parsed rows of one bundle (or, merged, of the whole input).

    Attributes:
        rows: int. Parsed rows seen (unparseable lines are not profiled).
        missing: column -> rows where the value was absent, null or empty.
        unknown: column not in the spec -> rows that carried it.
        low, high: numeric column -> smallest / largest value among valid rows.
        distinct: column -> DistinctSketch over valid rows.
        outside: feature -> valid rows whose value lies outside reused artifacts (reuse mode).
    """

    def __init__(self):
        self.rows = 0
        self.missing: dict[str, int] = {}
        self.unknown: dict[str, int] = {}
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}
        self.distinct: dict[str, DistinctSketch] = {}
        self.outside: dict[str, int] = {}

    def add_valid(self, row: Mapping[str, Any], numeric: Iterable[str], categorical: Iterable[str]) -> None:
        low, high = self.low, self.high
        for name in numeric:
            value = row[name]
            if name not in low:
                low[name] = high[name] = value
            elif value < low[name]:
                low[name] = value
            elif value > high[name]:
                high[name] = value
        for name in categorical:
            sketch = self.distinct.get(name)
            if sketch is None:
                sketch = self.distinct[name] = DistinctSketch()
            sketch.add(row[name])

    def add_elements(self, row: Mapping[str, Any], lists: Iterable[str]) -> None:
        """Counts the elements of a valid row's list columns ``lists`` as their distinct values."""
        for name in lists:
            sketch = self.distinct.get(name)
            if sketch is None:
                sketch = self.distinct[name] = DistinctSketch()
            for value in row[name]:
                sketch.add(value)

    def merge(self, other: "Profile") -> None:
        self.rows += other.rows
        for mine, theirs in ((self.missing, other.missing), (self.unknown, other.unknown),
                             (self.outside, other.outside)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        for name, value in other.low.items():
            self.low[name] = min(self.low.get(name, value), value)
        for name, value in other.high.items():
            self.high[name] = max(self.high.get(name, value), value)
        for name, sketch in other.distinct.items():
            if name in self.distinct:
                self.distinct[name].merge(sketch)
            else:
                self.distinct[name] = sketch

    def summary(self, columns: Iterable[str]) -> dict:
        """Plain JSON data: per column ``{missing, missing_rate, distinct, distinct_exact, min, max}``."""
        out = {}
        for name in columns:
            entry = {"missing": self.missing.get(name, 0),
                     "missing_rate": self.missing.get(name, 0) / self.rows if self.rows else 0.0}
            if name in self.distinct:
                entry["distinct"] = self.distinct[name].estimate()
                entry["distinct_exact"] = self.distinct[name].is_exact
            if name in self.low:
                entry["min"], entry["max"] = self.low[name], self.high[name]
            out[name] = entry
        return {"profiled_rows": self.rows, "columns": out,
                "unknown_columns": dict(sorted(self.unknown.items())),
                "outside_artifacts": dict(sorted(self.outside.items()))}


class MergeProfiles(beam.CombineFn):
    """Merges per-bundle :class:`Profile` elements into one (an empty one for empty input)."""

    def create_accumulator(self):
        return Profile()

    def add_input(self, accumulator, element):
        accumulator.merge(element)
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            merged.merge(other)
        return merged

    def extract_output(self, accumulator):
        return accumulator
