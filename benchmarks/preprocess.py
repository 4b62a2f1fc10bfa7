"""Preprocessing speed: rows/s and peak memory of the Beam pipeline, against plain pandas.

Generates N clicklog rows (Parquet, ``--chunk_rows`` per file, the generator's default dirt), then
runs, each in its own child process so that peak memory is measured per mode, back to back:

- ``row``: the row-at-a-time path (``--batch_rows 0``) on the in-process FnApiRunner, one thread;
- ``in_process``: the batched path (the default) on the in-process FnApiRunner, one thread
  (``--direct_running_mode=in_memory``, the project's default);
- ``multi_thread``: the same with ``--direct_num_workers=W --direct_running_mode=multi_threading``
  (one process; pyarrow, zlib and CRC-32C release the GIL, Beam's own per-bundle work does not);
- ``multi_process``: the same with ``--direct_num_workers=W --direct_running_mode=multi_processing``;
- ``pandas``: the same validation (types, NaN/inf, min/max, required) and the same train-split
  statistics (vocabularies, mean/variance, quantiles) in plain pandas, file by file, as reference.

    .venv/bin/python benchmarks/preprocess.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/preprocess.py --rows 200000 --workers 2
    .venv/bin/python benchmarks/preprocess.py --rows 10000000    # adds "rows_10m" to the JSON
    .venv/bin/python benchmarks/preprocess.py --rows 10000000 --modes in_process,multi_process

Peak memory is sampled from /proc every 0.2 s over the child and all its descendants
(``peak_rss_mb_total``: the largest sum seen), beside each process's own ``ru_maxrss``. The
pipeline's progress lines (rows read, rows/s) are passed through while a mode runs.

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
MODES = ("row", "in_process", "multi_thread", "multi_process", "pandas")
TEN_MILLION = 10_000_000
SAMPLE_SECONDS = 0.2


def _peak_rss_mb() -> dict:
    # ru_maxrss is in KiB on Linux; children: the largest waited-for child (the SDK workers).
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _tree_usage(root: int) -> tuple[float, dict[int, float]]:
    """Summed resident memory of ``root`` and every process below it (MB), and each one's CPU
    seconds so far (user + system), from /proc."""
    parents, rss, cpu = {}, {}, {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * resource.getpagesize()
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree) / 2**20, {pid: cpu[pid] for pid in tree if pid in cpu}


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
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pipelines").setLevel(logging.INFO)  # the readers' progress lines
    if args.mode == "pandas":
        result = run_pandas(args.pattern)
    else:
        beam_args = {"row": ["--batch_rows=0", "--direct_running_mode=in_memory"],
                     "in_process": ["--direct_running_mode=in_memory"],
                     "multi_thread": [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_threading"],
                     "multi_process": [f"--direct_num_workers={args.workers}",
                                       "--direct_running_mode=multi_processing"]}[args.mode]
        result = run_beam(args.pattern, os.path.join(args.tmp, args.mode), beam_args)
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk_rows", type=int, default=100_000, help="rows per generated Parquet file")
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers of multi_process")
    parser.add_argument("--modes", default=None,
                        help=f"comma-separated; default {','.join(MODES)} (in_process alone from {TEN_MILLION:,} rows)")
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
        for mode in (args.modes or ("in_process" if args.rows >= TEN_MILLION else ",".join(MODES))).split(","):
            command = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--pattern", pattern,
                       "--tmp", tmp, "--workers", str(args.workers)]
            wall = time.perf_counter()
            returncode, stdout, stderr, peak_total, cpu_seconds = _run_child(command)
            wall = time.perf_counter() - wall
            lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
            if returncode or not lines:
                raise SystemExit(f"{mode} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            result["process_seconds"] = wall  # including interpreter start-up
            result["peak_rss_mb_total"] = round(peak_total, 1)
            # CPU seconds of all its processes: unlike wall time, what another job on the cores
            # cannot inflate much, so modes compare by it on a shared machine too
            result["cpu_seconds_total"] = round(cpu_seconds, 1)
            result["rows_per_s"] = result["input_rows"] / result["seconds"]
            modes[mode] = result
            print(f"{mode:>14}: {result['seconds']:7.1f} s  {result['rows_per_s']:>10,.0f} rows/s  "
                  f"peak RSS {result['peak_rss_mb']['self']:,.0f} MB (workers {result['peak_rss_mb']['children']:,.0f} MB, "
                  f"all processes {peak_total:,.0f} MB), {cpu_seconds:,.1f} CPU s", flush=True)

    if args.rows >= TEN_MILLION:
        return _record_large_run(args, modes)

    def rate(mode):
        return round(modes[mode]["rows_per_s"], 1) if mode in modes else None

    summary = {
        "rows": args.rows,
        "row_path_rows_per_s": rate("row"),
        "in_process_over_pandas": (round(rate("in_process") / rate("pandas"), 3)
                                   if rate("in_process") and rate("pandas") else None),
        "in_process_over_row_path": (round(rate("in_process") / rate("row"), 3)
                                     if rate("in_process") and rate("row") else None),
        "in_process_rows_per_s": rate("in_process"),
        "multi_process_rows_per_s": rate("multi_process"),
        "pandas_rows_per_s": rate("pandas"),
        "peak_rss_mb": round(max(max(m["peak_rss_mb"].values()) for m in modes.values()), 1),
        "multi_over_in_process": (round(rate("multi_process") / rate("in_process"), 3)
                                  if rate("multi_process") and rate("in_process") else None),
        "workers": args.workers,
        "chunk_rows": args.chunk_rows,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "modes": modes,
    }
    previous = _read_json(args.output)
    if "rows_10m" in previous:
        summary["rows_10m"] = previous["rows_10m"]
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "modes"}, indent=2))
    return summary


def _run_child(command: list[str]) -> tuple[int, str, str, float, float]:
    """Runs one mode; passes its progress lines through; samples its process tree's memory and CPU
    time. Returns ``(returncode, stdout, stderr, peak RSS MB summed over the tree, CPU seconds of
    the tree)`` (the CPU seconds as last sampled, up to SAMPLE_SECONDS short per process)."""
    import threading

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []

    def pump():
        for line in process.stderr:
            err_lines.append(line)
            if "preprocess: read" in line or "preprocess: pipeline" in line:
                print("    " + line.rstrip(), flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    out: list[str] = []
    stdout_reader = threading.Thread(target=lambda: out.append(process.stdout.read()), daemon=True)
    stdout_reader.start()
    peak, cpu = 0.0, {}
    while process.poll() is None:
        memory, seconds = _tree_usage(process.pid)
        peak = max(peak, memory)
        for pid, value in seconds.items():  # a process's CPU time only grows: keep its last sample
            cpu[pid] = max(cpu.get(pid, 0.0), value)
        time.sleep(SAMPLE_SECONDS)
    reader.join()
    stdout_reader.join()
    return process.returncode, "".join(out), "".join(err_lines), peak, sum(cpu.values())


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _large_run_figures(mode: dict) -> dict:
    return {"rows_per_s": round(mode["rows_per_s"], 1), "seconds": round(mode["seconds"], 1),
            "peak_rss_mb_total": mode["peak_rss_mb_total"], "cpu_seconds_total": mode["cpu_seconds_total"]}


def _record_large_run(args, modes: dict) -> dict:
    """Adds ``rows_10m`` to the results file, keeping the rest: the first mode's figures at the
    top level, and every mode's (run back to back) under ``modes``."""
    first = next(iter(modes.values()))
    large = {"rows": args.rows, "mode": next(iter(modes)), **_large_run_figures(first),
             "written": first["written"], "rejected": first["rejected"], "cpus": os.cpu_count(),
             "load_average_1m_at_end": round(os.getloadavg()[0], 2),
             "modes": {name: _large_run_figures(mode) for name, mode in modes.items()}}
    if "in_process" in modes and "multi_process" in modes:
        large["multi_over_in_process"] = round(modes["multi_process"]["rows_per_s"] / modes["in_process"]["rows_per_s"], 3)
    summary = _read_json(args.output)
    summary["rows_10m"] = large
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps(large, indent=2))
    return summary


if __name__ == "__main__":
    main()
