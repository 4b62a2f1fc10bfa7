"""Preprocessing speed: rows/s and peak memory of the Beam pipeline, against plain pandas.

Generates N clicklog rows (Parquet, ``--chunk_rows`` per file, the generator's default dirt), then
runs, each in its own child process so that peak memory is measured per mode, back to back:

- ``in_process``: the pipeline on the in-process FnApiRunner (the project's default);
- ``multi_process``: the same with ``--direct_num_workers=W --direct_running_mode=multi_processing``;
- ``pandas``: the same validation (types, NaN/inf, min/max, required) and the same train-split
  statistics (vocabularies, mean/variance, quantiles) in plain pandas, file by file, as reference.

    .venv/bin/python benchmarks/preprocess.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/preprocess.py --rows 200000 --workers 2

Prints a table and writes benchmarks/results/preprocess.json:
``{"rows", "in_process_rows_per_s", "multi_process_rows_per_s", "pandas_rows_per_s",
"peak_rss_mb", "multi_over_in_process", "modes": {...}}``. The machine may be shared: the modes
run back to back in one invocation, so compare their ratio rather than absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")
MODES = ("in_process", "multi_process", "pandas")


def _peak_rss_mb() -> dict:
    # ru_maxrss is in KiB on Linux; children: the largest waited-for child (the SDK workers).
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_beam(pattern: str, workdir: str, beam_args: list[str]) -> dict:
    from feature_specs.spec_reader import bundled_spec_path
    from pipelines import preprocess

    start = time.perf_counter()
    report = preprocess(bundled_spec_path("clicklog"), pattern, workdir, beam_args=beam_args,
                        max_reject_rate=1.0)
    return {"seconds": time.perf_counter() - start, "input_rows": report["input_rows"],
            "written": report["written"]["total"], "rejected": report["rejected"]["total"]}


def run_pandas(pattern: str) -> dict:
    """Validation and train-split statistics of the clicklog spec in plain pandas."""
    import glob

    import numpy as np
    import pandas as pd

    from feature_specs.spec_reader import bundled_spec_path, load_spec
    from pipelines.split import hash_fraction

    spec = load_spec(bundled_spec_path("clicklog"))
    start = time.perf_counter()
    counts, sums, quantile_samples, total, written = {}, {}, {}, 0, 0
    for path in sorted(glob.glob(pattern)):
        frame = pd.read_parquet(path)
        total += len(frame)
        ok = np.ones(len(frame), dtype=bool)
        typed = {}
        for column in spec.all_columns:
            raw = frame[column.name] if column.name in frame else pd.Series([None] * len(frame))
            missing = raw.isna() | (raw.astype(str).str.strip() == "")
            if column.dtype == "string":
                value = raw.astype(str)
            else:
                value = pd.to_numeric(raw, errors="coerce")
                bad = value.isna() & ~missing
                if column.dtype == "float":
                    bad |= ~np.isfinite(value.fillna(0))
                else:
                    bad |= value.notna() & (value != np.floor(value.fillna(0)))
                if column.min is not None:
                    bad |= value < column.min
                if column.max is not None:
                    bad |= value > column.max
                ok &= ~bad.to_numpy()
            if column.required:
                ok &= ~missing.to_numpy()
            else:
                value = value.where(~missing, column.default)
            typed[column.name] = value
        valid = pd.DataFrame(typed)[ok]
        written += len(valid)
        fractions = valid[spec.split.key].map(lambda v: hash_fraction(v, spec.split.seed))
        train = valid[fractions.to_numpy() >= spec.split.eval_fraction]
        for feature in spec.features:
            if feature.transform == "vocabulary":
                counts[feature.name] = counts.get(feature.name, pd.Series(dtype="int64")).add(
                    train[feature.name].value_counts(), fill_value=0)
            elif feature.transform in ("zscore", "log1p"):
                x = train[feature.name].astype(float)
                x = np.log1p(x) if feature.transform == "log1p" else x
                s = sums.setdefault(feature.name, [0, 0.0, 0.0])
                s[0] += len(x)
                s[1] += float(x.sum())
                s[2] += float((x * x).sum())
            elif feature.transform == "quantile":
                quantile_samples.setdefault(feature.name, []).append(train[feature.name].to_numpy())
    for feature in spec.features:
        if feature.name in counts:
            c = counts[feature.name]
            c = c[c >= feature.min_count].sort_values(ascending=False).head(feature.top_k)
        if feature.name in quantile_samples:
            np.quantile(np.concatenate(quantile_samples[feature.name]),
                        np.linspace(0, 1, feature.num_buckets + 1))
    return {"seconds": time.perf_counter() - start, "input_rows": total, "written": written,
            "rejected": total - written}


def child(args) -> None:
    if args.mode == "pandas":
        result = run_pandas(args.pattern)
    else:
        beam_args = [] if args.mode == "in_process" else [
            f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
        result = run_beam(args.pattern, os.path.join(args.tmp, args.mode), beam_args)
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk_rows", type=int, default=100_000, help="rows per generated Parquet file")
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers of multi_process")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--output", default=os.path.join(RESULTS, "preprocess.json"))
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--pattern", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        return child(args)

    from data_sets.clicklog import generate_clicklog

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_clicklog(os.path.join(tmp, "raw"), rows=args.rows, seed=0, chunk_rows=args.chunk_rows,
                          corrupt_fraction=0.001)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - start:.1f} s", flush=True)
        pattern = os.path.join(tmp, "raw", "*.parquet")
        modes = {}
        for mode in args.modes.split(","):
            command = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--pattern", pattern,
                       "--tmp", tmp, "--workers", str(args.workers)]
            wall = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - wall
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not lines:
                raise SystemExit(f"{mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            result["process_seconds"] = wall  # including interpreter and TensorFlow start-up
            result["rows_per_s"] = result["input_rows"] / result["seconds"]
            modes[mode] = result
            print(f"{mode:>14}: {result['seconds']:7.1f} s  {result['rows_per_s']:>10,.0f} rows/s  "
                  f"peak RSS {result['peak_rss_mb']['self']:,.0f} MB (workers {result['peak_rss_mb']['children']:,.0f} MB)",
                  flush=True)

    def rate(mode):
        return round(modes[mode]["rows_per_s"], 1) if mode in modes else None

    summary = {
        "rows": args.rows,
        "in_process_rows_per_s": rate("in_process"),
        "multi_process_rows_per_s": rate("multi_process"),
        "pandas_rows_per_s": rate("pandas"),
        "peak_rss_mb": round(max(max(m["peak_rss_mb"].values()) for m in modes.values()), 1),
        "multi_over_in_process": (round(rate("multi_process") / rate("in_process"), 3)
                                  if rate("multi_process") and rate("in_process") else None),
        "workers": args.workers,
        "chunk_rows": args.chunk_rows,
        "cpus": os.cpu_count(),
        "modes": modes,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "modes"}, indent=2))
    return summary


if __name__ == "__main__":
    main()
