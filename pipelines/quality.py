"""The data-quality profile: per-column missing counts, distinct values, ranges, unknown columns.

Validation fills one :class:`Profile` per bundle while it checks rows (no extra element per row)
and emits it at the end of the bundle; :class:`MergeProfiles` combines them into one. Distinct
values are exact up to :data:`EXACT_LIMIT` per column, then estimated with a k-minimum-values
sketch (relative error about 1/sqrt(k), ~3% for k = 1024) over a stable 64-bit hash, so the
estimate is the same on every worker and runner.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Any, Iterable, Mapping

import apache_beam as beam

EXACT_LIMIT = 4096
SKETCH_SIZE = 1024
_HASH_RANGE = 2.0**64


def _hash(value: Any) -> int:
    data = value.encode("utf-8") if isinstance(value, str) else repr(value).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class DistinctSketch:
    """Counts distinct values: an exact set while small, then a KMV sketch of the smallest hashes."""

    __slots__ = ("exact", "heap", "hashes")

    def __init__(self):
        self.exact: set | None = set()
        self.heap: list[int] = []  # negated hashes: a max-heap of the SKETCH_SIZE smallest
        self.hashes: set[int] = set()

    def add(self, value: Any) -> None:
        if self.exact is not None:
            self.exact.add(value)
            if len(self.exact) > EXACT_LIMIT:
                values, self.exact = self.exact, None
                for v in values:
                    self._add_hash(_hash(v))
            return
        self._add_hash(_hash(value))

    def _add_hash(self, h: int) -> None:
        if h in self.hashes:
            return
        if len(self.heap) < SKETCH_SIZE:
            heapq.heappush(self.heap, -h)
            self.hashes.add(h)
        elif h < -self.heap[0]:
            self.hashes.discard(-heapq.heapreplace(self.heap, -h))
            self.hashes.add(h)

    def merge(self, other: "DistinctSketch") -> None:
        if other.exact is not None:
            for value in other.exact:
                self.add(value)
            return
        if self.exact is not None:
            values, self.exact = self.exact, None
            for v in values:
                self._add_hash(_hash(v))
        for h in other.hashes:
            self._add_hash(h)

    def estimate(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        if len(self.heap) < SKETCH_SIZE:
            return len(self.heap)
        return round((SKETCH_SIZE - 1) * _HASH_RANGE / (-self.heap[0] + 1))

    @property
    def is_exact(self) -> bool:
        return self.exact is not None

    def __getstate__(self):
        return self.exact, self.heap

    def __setstate__(self, state):
        self.exact, self.heap = state
        self.hashes = {-h for h in self.heap}


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
