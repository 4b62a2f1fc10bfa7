"""The deterministic train/eval split.

A row's split depends only on its own key value and the spec, so it is the same on every runner,
every rerun and every machine: ``hash`` maps sha256(f"{seed}:{value}") to [0, 1) and sends values
below ``eval_fraction`` to eval (all rows of one key, e.g. one request, land together);
``timestamp`` sends rows whose key is at or after ``cutoff`` to eval.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_specs.spec import Split

SPLITS = ("train", "eval")
TRAIN, EVAL = 0, 1


def hash_fraction(value: Any, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a key value (sha256 of ``f"{seed}:{value}"``)."""
    digest = hashlib.sha256(f"{seed}:{value}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_index(row: Mapping[str, Any], split: Split) -> int:
    """Returns :data:`TRAIN` (0) or :data:`EVAL` (1) for a validated row.

    Args:
        row: a validated row ``{column: typed value}``.
        split: Split. The spec's split.
    """
    value = row[split.key]
    if split.method == "hash":
        return EVAL if hash_fraction(value, split.seed) < split.eval_fraction else TRAIN
    if split.method == "timestamp":
        return EVAL if value >= split.cutoff else TRAIN
    raise ValueError(f"unknown split method {split.method!r}")


def _partition(row, num_partitions, split):
    return split_index(row, split)


class SplitRows(beam.PTransform):
    """Partitions validated rows into train and eval.

    Args:
        split: Split. The spec's split.

    Returns (from ``expand``):
        ``(train, eval)`` PCollections.
    """

    def __init__(self, split: Split):
        super().__init__()
        if split.method not in ("hash", "timestamp"):
            raise ValueError(f"unknown split method {split.method!r}")
        self._split = split

    def expand(self, rows):
        parts = rows | "Partition" >> beam.Partition(_partition, len(SPLITS), self._split)
        return parts[TRAIN], parts[EVAL]


def eval_mask(table: pa.Table, split: Split) -> np.ndarray:
    """Bool per row of a table of validated rows: True where :func:`split_index` says eval.

    Hashes each distinct key once (sha256, as :func:`hash_fraction`), so the split is the row
    path's, row for row.

    Args:
        table: pa.Table with the split's key column.
        split: Split. The spec's split.
    """
    keys = table.column(split.key).combine_chunks()
    if split.method == "hash":
        encoded = pc.dictionary_encode(keys, null_encoding="encode")
        fractions = np.array([hash_fraction(value, split.seed) for value in encoded.dictionary.to_pylist()])
        indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        return fractions[indices] < split.eval_fraction if len(fractions) else np.zeros(len(keys), dtype=bool)
    if split.method == "timestamp":
        return np.asarray(pc.greater_equal(keys, pa.scalar(split.cutoff)).to_numpy(zero_copy_only=False), dtype=bool)
    raise ValueError(f"unknown split method {split.method!r}")


class _SplitBatch(beam.DoFn):
    def __init__(self, split: Split):
        self._split = split

    def process(self, table):
        to_eval = eval_mask(table, self._split)
        train, eval_ = table.filter(pa.array(~to_eval)), table.filter(pa.array(to_eval))
        if train.num_rows:
            yield train
        if eval_.num_rows:
            yield beam.pvalue.TaggedOutput(SPLITS[EVAL], eval_)


class SplitBatches(beam.PTransform):
    """:class:`SplitRows` for tables of validated rows: each table's rows split row by row.

    Returns (from ``expand``):
        ``(train, eval)`` PCollections of pa.Table.
    """

    def __init__(self, split: Split):
        super().__init__()
        if split.method not in ("hash", "timestamp"):
            raise ValueError(f"unknown split method {split.method!r}")
        self._split = split

    def expand(self, tables):
        parts = tables | "Split" >> beam.ParDo(_SplitBatch(self._split)).with_outputs(SPLITS[EVAL], main=SPLITS[TRAIN])
        return parts[SPLITS[TRAIN]], parts[SPLITS[EVAL]]
