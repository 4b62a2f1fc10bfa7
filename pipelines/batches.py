"""Batches of raw rows: the element the batched pipeline carries instead of one dict per row.

A :class:`RawBatch` holds the rows of one block of one input file (or of a group of records from
the label join) in one of two forms:

- ``table``: an Arrow table of the rows as read, every column of the file (a Parquet row group,
  a CSV block parsed by pyarrow with every column as text); for CSV also the raw ``lines``;
- ``records``: a list of :class:`~pipelines.records.RawRecord` (JSONL and TFRecord rows, CSV
  blocks the row reader parsed, joined impressions), whose values :func:`column_from_values`
  turns into Arrow columns.

Either way :meth:`RawBatch.column` gives one column as an Arrow array with the rows whose value
has a Python type the array cannot hold (``odd``), and :meth:`RawBatch.record` rebuilds any one
row as the :class:`RawRecord` the row-at-a-time path would have seen, so rows that need a closer
look go through exactly the same checks.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from pipelines.records import RawRecord

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def column_from_values(values: Sequence[Any]) -> tuple[pa.Array, np.ndarray]:
    """One column of Python values as an Arrow array.

    The array's type follows the first value that is not None: ``str`` -> string, ``int`` (not
    bool, within int64) -> int64, ``float`` -> float64, ``bytes`` -> string when every one is
    UTF-8 (else binary). Values of any other type, or of another type than that one, are ``odd``:
    null in the array, flagged in the mask, for the caller to check one by one.

    Args:
        values: one value per row (None where the row has no value).

    Returns:
        ``(array, odd)``: an Arrow array of ``len(values)`` and a bool array of the odd rows.
    """
    first = next((v for v in values if v is not None), None)
    kind = type(first)
    odd = np.fromiter((v is not None and type(v) is not kind for v in values), dtype=bool, count=len(values))
    if kind is int:
        odd |= np.fromiter((type(v) is int and not _INT64_MIN <= v <= _INT64_MAX for v in values),
                           dtype=bool, count=len(values))
    if kind not in (str, int, float, bytes):
        odd |= np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        return pa.nulls(len(values), pa.null()), odd
    kept = [None if flag else v for v, flag in zip(values, odd)] if odd.any() else list(values)
    arrow_type = {str: pa.string(), int: pa.int64(), float: pa.float64(), bytes: pa.binary()}[kind]
    array = pa.array(kept, type=arrow_type)
    if kind is bytes:
        try:
            array = array.cast(pa.string())
        except pa.ArrowInvalid:  # not all UTF-8: the row-at-a-time rules tell which fail
            odd |= ~np.asarray(array.is_null().to_numpy(zero_copy_only=False))
            array = pa.nulls(len(values), pa.string())
    return array, odd


class RawBatch(NamedTuple):
    """The rows of one block of input, as read.

    Args:
        source: str. The file the rows came from (per record for ``records`` batches).
        table: pa.Table or None. Every column of the file, one row per input row.
        lines: list of str or None. With ``table`` from CSV: each row's line as read.
        records: list of RawRecord or None. The rows, where there is no ``table``.
    """

    source: str
    table: pa.Table | None = None
    lines: list[str] | None = None
    records: list[RawRecord] | None = None

    @classmethod
    def from_records(cls, records: Sequence[RawRecord]) -> "RawBatch":
        records = list(records)
        return cls(records[0].source if records else "", records=records)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows if self.table is not None else len(self.records)

    def parsed(self) -> np.ndarray:
        """Bool per row: the row parsed into values (False: an unparseable line or record)."""
        if self.table is not None:
            return np.ones(self.table.num_rows, dtype=bool)
        return np.fromiter((r.values is not None for r in self.records), dtype=bool, count=len(self.records))

    def column_names(self) -> list[str] | None:
        """The columns every row carries (a table's columns), or None when rows differ (records)."""
        return list(self.table.column_names) if self.table is not None else None

    def column(self, name: str) -> tuple[pa.Array | None, np.ndarray | None]:
        """``(array, odd)`` of column ``name`` (see :func:`column_from_values`); ``(None, None)``
        when a table has no such column (every row lacks it)."""
        if self.table is not None:
            if name not in self.table.column_names:
                return None, None
            return self.table.column(name).combine_chunks(), None
        return column_from_values([None if r.values is None else r.values.get(name) for r in self.records])

    def record(self, index: int) -> RawRecord:
        """Row ``index`` as the row-at-a-time reader gives it."""
        if self.records is not None:
            return self.records[index]
        values = self.table.slice(index, 1).to_pylist()[0]
        if self.lines is not None:
            return RawRecord(self.source, self.lines[index], values)
        return RawRecord(self.source, values, values)

    def iter_records(self):
        """Every row as a RawRecord (the label join's input)."""
        if self.records is not None:
            yield from self.records
            return
        for index, values in enumerate(self.table.to_pylist()):
            yield RawRecord(self.source, self.lines[index] if self.lines is not None else values, values)
