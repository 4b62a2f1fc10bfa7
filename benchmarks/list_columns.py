"""What list columns cost the pipeline: rows/s with and without two list features, side by side.

A seeded synthetic log (scalar features, a request id, click and dwell) is written as CSV and
Parquet, once as it is and once with two list columns (``tags``: 0-6 strings, comma-joined in CSV,
a Parquet list<string>; ``cats``: 0-3 ints, ``;``-joined in CSV, a Parquet list<int64>), and each
is preprocessed on the batched path (the default) and the row path (``--batch_rows 0``), in-process,
back to back. The ratio of the two logs' rates on the same path is the price of the lists.

    .venv/bin/python benchmarks/list_columns.py --rows 100000   # writes benchmarks/results/list_columns.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.machine import describe_cpu  # noqa: E402
from feature_specs.spec_reader import spec_from_dict  # noqa: E402

SPEC = {
    "name": "list_bench",
    "features": [
        {"name": "user", "type": "string", "transform": "vocabulary"},
        {"name": "item", "type": "int", "transform": "hashing", "num_bins": 4096},
        {"name": "price", "type": "float", "transform": "zscore"},
        {"name": "tags", "type": "string", "list": {"max_length": 4}, "transform": "vocabulary"},
        {"name": "cats", "type": "int", "list": {"separator": ";", "max_length": 3}, "transform": "hashing",
         "num_bins": 64},
    ],
    "columns": [{"name": "request_id", "type": "string"}, {"name": "clicked", "type": "int", "min": 0, "max": 1},
                {"name": "dwell", "type": "float", "min": 0}],
    "tasks": [{"name": "click", "label": "clicked", "kind": "binary"},
              {"name": "engagement", "label": "dwell", "kind": "regression", "mask": "clicked"}],
    "ranking": {"group_by": "request_id", "weights": {"click": 1.0}},
    "split": {"key": "request_id"},
}
LISTS = ("tags", "cats")


def rows(n: int, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    tags = [[f"t{t}" for t in rng.choice(50, size=int(k), replace=False)] for k in rng.integers(0, 7, n)]
    cats = [rng.integers(0, 500, size=int(k)).tolist() for k in rng.integers(0, 4, n)]
    clicked = (rng.random(n) < 0.2).astype(int)
    return {"user": [f"u{u}" for u in rng.integers(0, 5000, n)], "item": rng.integers(0, 10**6, n).tolist(),
            "price": np.round(rng.random(n) * 100, 2).tolist(), "tags": tags, "cats": cats,
            "request_id": [f"r{i // 10}" for i in range(n)], "clicked": clicked.tolist(),
            "dwell": np.round(rng.random(n) * 60 * clicked, 1).tolist()}


def write(columns: dict[str, list], path: str, fmt: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    data = dict(columns)
    if fmt == "csv":
        for name, separator in (("tags", ","), ("cats", ";")):
            if name in data:
                data[name] = [separator.join(map(str, v)) for v in data[name]]
        pcsv.write_csv(pa.table(data), path)
    else:
        pq.write_table(pa.table(data), path, row_group_size=50_000)


def spec(with_lists: bool):
    data = copy.deepcopy(SPEC)
    if not with_lists:
        data["features"] = [f for f in data["features"] if f["name"] not in LISTS]
    return spec_from_dict(data)


def measure(path: str, with_lists: bool, batch_rows: int, workdir: str) -> dict:
    from pipelines.run import preprocess

    start = time.perf_counter()
    report = preprocess(spec(with_lists), path, workdir, beam_args=[f"--batch_rows={batch_rows}"])
    seconds = time.perf_counter() - start
    assert report["rejected"]["total"] == 0, report["rejected"]
    return {"rows_per_s": report["input_rows"] / seconds, "seconds": seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "list_columns.json"))
    args = parser.parse_args(argv)
    columns = rows(args.rows, args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            for with_lists in (False, True):
                data = columns if with_lists else {k: v for k, v in columns.items() if k not in LISTS}
                path = os.path.join(tmp, f"log_{int(with_lists)}.{fmt}")
                write(data, path, fmt)
                for path_name, batch_rows in (("batched", 4096), ("row", 0)):
                    key = f"{fmt}/{path_name}/{'lists' if with_lists else 'no_lists'}"
                    results[key] = measure(path, with_lists, batch_rows, os.path.join(tmp, key.replace("/", "_")))
                    print(f"{key}: {results[key]['rows_per_s']:,.0f} rows/s", flush=True)
    ratios = {f"{fmt}/{p}": results[f"{fmt}/{p}/lists"]["rows_per_s"] / results[f"{fmt}/{p}/no_lists"]["rows_per_s"]
              for fmt in args.formats.split(",") for p in ("batched", "row")}
    out = {"rows": args.rows, "seed": args.seed, "machine": describe_cpu(), "modes": results,
           "lists_over_no_lists": ratios}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(out, handle, indent=2)
    print(json.dumps(ratios, indent=2))
    return out


if __name__ == "__main__":
    main()
