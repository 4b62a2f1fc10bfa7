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
