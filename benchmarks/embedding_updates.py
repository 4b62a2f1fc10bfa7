"""Cost of one optimizer step on an embedding table: Keras' Adam against LazyAdam, by vocabulary.

An embedding lookup's gradient is row-sparse (``tf.IndexedSlices``). Keras' Adam densifies it and
updates the whole table and both moment slots every step; ``mmoe.optimizers.LazyAdam`` updates
the looked-up rows only (``training.lazy_update_min_rows``). This times one ``apply_gradients``
of ``--lookups`` random rows of a ``(rows, --dim)`` float32 table, for each table size, in graph
mode, XLA-compiled (as the trainer compiles the update in one process), and in graph mode under a
one-device ``MirroredStrategy`` (the multi-worker code path). Variants are timed in interleaved
rounds; medians.

    .venv/bin/python benchmarks/embedding_updates.py            # about 15 s on 2 cores

Writes benchmarks/results/embedding_updates.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mmoe.optimizers import LazyAdam  # noqa: E402

OPTIMIZERS = {"adam": keras.optimizers.Adam, "lazy_adam": LazyAdam}
MODES = ("graph", "xla", "strategy")


def make_step(optimizer_name: str, mode: str, rows: int, dim: int, lookups: int, seed: int):
    """One compiled ``apply_gradients`` of a fixed row-sparse gradient to a fresh table."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if mode == "strategy" else tf.distribute.get_strategy()
    with strategy.scope():
        table = keras.Variable(np.zeros((rows, dim), np.float32))
        optimizer = OPTIMIZERS[optimizer_name](learning_rate=1e-3)
        optimizer.build([table])
    rng = np.random.default_rng(seed)
    gradient = tf.IndexedSlices(tf.constant(rng.normal(size=(lookups, dim)), tf.float32),
                                tf.constant(rng.integers(0, rows, lookups), tf.int64),
                                tf.constant([rows, dim], tf.int64))

    def apply():
        optimizer.apply_gradients([(gradient, table)])

    if mode == "strategy":
        return tf.function(lambda: strategy.run(apply))
    return tf.function(apply, jit_compile=mode == "xla")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--lookups", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "embedding_updates.json"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    steps = {}
    for rows in args.rows:
        for name in OPTIMIZERS:
            for mode in MODES:
                step = make_step(name, mode, rows, args.dim, args.lookups, seed=0)
                step()  # trace, compile, build the slots
                steps[(rows, name, mode)] = step
        print(f"built the variants for {rows:,} rows", flush=True)
    times = {key: [] for key in steps}
    for r in range(args.rounds):
        order = list(steps)
        random.Random(r).shuffle(order)
        for key in order:
            steps[key]()
            for _ in range(args.steps):
                begin = time.perf_counter()
                steps[key]()
                times[key].append(time.perf_counter() - begin)
        print(f"round {r + 1}/{args.rounds}", flush=True)

    table = []
    for rows in args.rows:
        for mode in MODES:
            adam, lazy = (float(np.median(times[(rows, name, mode)])) * 1e3 for name in OPTIMIZERS)
            table.append({"rows": rows, "mode": mode, "adam_ms": round(adam, 3), "lazy_adam_ms": round(lazy, 3),
                          "adam_over_lazy": round(adam / lazy, 2)})
    result = {"dim": args.dim, "lookups": args.lookups, "rounds": args.rounds, "steps": args.steps,
              "cpus": os.cpu_count(), "tensorflow": tf.__version__, "median_ms_per_step": table,
              "wall_s": round(time.perf_counter() - start, 1)}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print("| rows | mode | Adam ms | LazyAdam ms | Adam / LazyAdam |\n|---:|---|---:|---:|---:|")
    for row in table:
        print(f"| {row['rows']:,} | {row['mode']} | {row['adam_ms']} | {row['lazy_adam_ms']} | {row['adam_over_lazy']} |")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
