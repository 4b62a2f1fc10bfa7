"""What a side-table join costs the pipeline: rows/s with the item attributes in the log, and with
them in an item table joined by ``item_id`` (side input, and key-grouped), side by side.

The generated click log (:func:`data_sets.clicklog.clicklog_tables`) is written as Parquet twice:
once as it is (``item_category``, ``item_price``, ``item_popularity`` in every impression), once
without those three columns, beside a generated item table (one row per item id, the same values)
that the spec's ``tables:`` joins back. Each is preprocessed on the batched path (the default)
in-process, back to back; the joined runs write the same features, so the ratio of rates is the
price of the join.

    .venv/bin/python benchmarks/side_tables.py --rows 1000000   # writes benchmarks/results/side_tables.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.machine import describe_cpu  # noqa: E402
from data_sets.clicklog import clicklog_tables  # noqa: E402
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict  # noqa: E402

ITEM_COLUMNS = ("item_category", "item_price", "item_popularity")
KEY = "item_id"


def write_logs(rows: int, seed: int, root: str) -> tuple[str, str, str, int]:
    """``(log with attributes, log without them, item table, items)``, each a Parquet file."""
    log = pa.concat_tables(clicklog_tables(rows, seed=seed))
    with_items, bare, items = (os.path.join(root, name) for name in ("log.parquet", "bare.parquet", "items.parquet"))
    pq.write_table(log, with_items, row_group_size=65_536)
    pq.write_table(log.drop_columns(list(ITEM_COLUMNS)), bare, row_group_size=65_536)
    table = log.select([KEY, *ITEM_COLUMNS]).group_by(KEY).aggregate([(c, "max") for c in ITEM_COLUMNS])
    table = table.rename_columns([name.removesuffix("_max") for name in table.column_names]).select([KEY, *ITEM_COLUMNS])
    distinct = pc.count_distinct(log.column(KEY)).as_py()
    assert table.num_rows == distinct
    pq.write_table(table, items)
    return with_items, bare, items, table.num_rows


def spec(join: str | None, items: str):
    """The bundled clicklog spec; with ``join``, its item attributes come from the item table."""
    base = load_spec(bundled_spec_path("clicklog"))
    if join is None:
        return base
    data = base.to_dict()
    columns = []
    for feature in data["features"]:
        if feature["name"] in ITEM_COLUMNS:
            column = {k: feature.pop(k) for k in ("name", "type", "required", "default", "min", "max") if k in feature}
            feature["name"] = column["name"]
            column.update(required=False, default="" if column["type"] == "string" else 0)
            columns.append(column)
    data["tables"] = [{"name": "items", "key": KEY, "input": items, "join": join, "columns": columns}]
    return spec_from_dict(data)


def measure(path: str, join: str | None, items: str, workdir: str, batch_rows: int) -> dict:
    from pipelines.run import preprocess

    start = time.perf_counter()
    report = preprocess(spec(join, items), path, workdir, beam_args=[f"--batch_rows={batch_rows}"])
    seconds = time.perf_counter() - start
    assert report["reconciled"], report
    out = {"rows_per_s": report["input_rows"] / seconds, "seconds": seconds, "written": report["written"]["total"]}
    if join is not None:
        out["tables"] = report["tables"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_rows", type=int, default=65_536, help="0: the row path")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "side_tables.json"))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        with_items, bare, items, num_items = write_logs(args.rows, args.seed, tmp)
        for mode, path, join in (("no_table", with_items, None), ("side_input", bare, "side_input"),
                                 ("grouped", bare, "grouped")):
            results[mode] = measure(path, join, items, os.path.join(tmp, mode), args.batch_rows)
            print(f"{mode}: {results[mode]['rows_per_s']:,.0f} rows/s", flush=True)
    ratios = {mode: results[mode]["rows_per_s"] / results["no_table"]["rows_per_s"] for mode in ("side_input", "grouped")}
    out = {"rows": args.rows, "items": num_items, "seed": args.seed, "batch_rows": args.batch_rows,
           "machine": describe_cpu(), "modes": results, "join_over_no_table": ratios}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(out, handle, indent=2)
    print(json.dumps(ratios, indent=2))
    return out


if __name__ == "__main__":
    main()
