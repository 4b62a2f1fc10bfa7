"""A tiny impression log with list-valued columns, written as CSV, JSONL and Parquet alike.

``tags`` is a list of strings (comma-separated text in CSV, a JSON array in JSONL, a Parquet
list<string>), ``cats`` a list of ints (``;``-separated text in CSV and JSONL, a Parquet
list<int64>). Rows are drawn with an explicit seed; clicks depend on the tags, so a model has
something to learn from them.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from feature_specs.spec_reader import spec_from_dict

TAGS = [f"t{i}" for i in range(12)]

LIST_SPEC = {
    "name": "lists",
    "features": [
        {"name": "user", "type": "string", "transform": "vocabulary", "embedding_dim": 4},
        {"name": "tags", "type": "string", "list": {"max_length": 4}, "transform": "vocabulary",
         "embedding_dim": 4},
        {"name": "cats", "type": "int", "list": {"separator": ";", "max_length": 3, "pooling": "sum",
                                                   "too_long": "reject"},
         "transform": "hashing", "num_bins": 16, "embedding_dim": 4, "max": 1000},
        {"name": "price", "type": "float", "transform": "zscore"},
    ],
    "columns": [
        {"name": "request_id", "type": "string"},
        {"name": "clicked", "type": "int", "min": 0, "max": 1},
        {"name": "dwell", "type": "float", "min": 0},
    ],
    "tasks": [
        {"name": "click", "label": "clicked", "kind": "binary"},
        {"name": "engagement", "label": "dwell", "kind": "regression", "mask": "clicked",
         "label_transform": "log1p"},
    ],
    "ranking": {"group_by": "request_id", "weights": {"click": 1.0}},
    "split": {"key": "request_id", "eval_fraction": 0.25, "seed": 1},
    "model": {"num_experts": 2, "expert_units": [8], "tower_units": [4]},
    "training": {"epochs": 1, "batch_size": 64, "shuffle_buffer": 100, "checkpoint_every_steps": 0},
}


def list_spec():
    return spec_from_dict(LIST_SPEC)


def list_rows(n: int = 240, seed: int = 0) -> list[dict]:
    """``n`` rows as Python values: ``tags`` and ``cats`` as lists (some empty, some over
    ``max_length``: 6 tags are cut to 4; ``cats`` stay within 3)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        tags = [str(t) for t in rng.choice(TAGS, size=int(rng.integers(0, 7)), replace=False)]
        cats = [int(c) for c in rng.integers(0, 1000, size=int(rng.integers(0, 4)))]
        clicked = int(rng.random() < (0.7 if "t1" in tags[:4] else 0.2))
        rows.append({"user": f"u{rng.integers(0, 8)}", "tags": tags, "cats": cats,
                     "price": round(float(rng.random() * 10), 3), "request_id": f"r{i // 4}",
                     "clicked": clicked, "dwell": round(float(rng.random() * 30) * clicked, 2)})
    return rows


def expected_row(row: dict) -> dict:
    """What validation makes of a row: tags cut to ``max_length`` 4."""
    return {**row, "tags": row["tags"][:4]}


def write_log(rows: list[dict], directory: str, fmt: str) -> str:
    """Writes ``rows`` as ``<directory>/log.<fmt>`` (csv, jsonl or parquet); returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"log.{fmt}")
    if fmt == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "tags": ",".join(row["tags"]), "cats": ";".join(map(str, row["cats"]))})
    elif fmt == "jsonl":
        with open(path, "w") as handle:
            for row in rows:
                handle.write(json.dumps({**row, "cats": ";".join(map(str, row["cats"]))}) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=pa.schema([
            ("user", pa.string()), ("tags", pa.list_(pa.string())), ("cats", pa.list_(pa.int64())),
            ("price", pa.float64()), ("request_id", pa.string()), ("clicked", pa.int64()), ("dwell", pa.float64())]))
        pq.write_table(table, path, row_group_size=100)
    return path
