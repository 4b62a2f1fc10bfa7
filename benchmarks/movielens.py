"""MovieLens ml-latest-small through ``mmoe compare``'s code: like and rating, trained on the past.

``data_sets/movielens.py`` writes one row per rating in time order (movie attributes joined,
user and movie context from strictly earlier ratings only); the project's Beam pipeline cuts it
at the spec's time cut (the first 80% of ratings train); this script cuts the evaluated 20% again
in time, at the 90% point, into a **validation** part (what the training loop evaluates after each
epoch, so it picks the kept epoch) and a **test** part (read only for the final metrics). Then
:func:`mmoe.compare.run_comparison` trains every model and seed with the project's loop
(``mmoe.loop.Trainer``, the one ``mmoe train`` and ``mmoe compare`` run), with the spec's training
settings (the defaults) for every model, and pairs them by seed.

    .venv/bin/python benchmarks/movielens.py                          # 4 models x 3 seeds, defaults
    .venv/bin/python benchmarks/movielens.py --set training.epochs=8 --name movielens_epochs8

Writes benchmarks/results/<name>.{json,md} (default ``movielens``); the JSON is ``compare.json``'s
shape, ``{"models": {"<model>": {"<task>": {"<metric>": [test value per seed]}}}, "paired": {...},
"gates": {...}, ...}``, plus ``meta`` (data, rows per part, settings, machine, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tensorflow as tf  # noqa: E402

from feature_specs.artifacts import Workdir  # noqa: E402
from feature_specs.spec_reader import bundled_spec_path, load_spec  # noqa: E402
from data_sets.movielens import DEFAULT_DATA, convert, time_quantile  # noqa: E402
from machine import describe_cpu  # noqa: E402
from mmoe.compare import DEFAULT_MODELS, DEFAULT_SEEDS, run_comparison, with_settings  # noqa: E402
from mmoe.compare_tables import comparison_markdown  # noqa: E402
from mmoe.data import split_files  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
TEST_FROM = 0.9  # ratings from this fraction of the log on (in time) are the test part


def split_eval(workdir: Workdir, test_from: int) -> tuple[str, dict]:
    """Cuts the pipeline's eval shards at ``timestamp >= test_from`` into validation and test.

    The eval shards are rewritten to hold only the validation part (earlier ratings); the test
    part goes to ``<root>/test/test.tfrecord.gz``. Returns that path and the rows of each part.
    """
    files = split_files(workdir, "eval")
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")

    def stamp(serialized):
        return tf.io.parse_single_example(serialized, {"timestamp": tf.io.FixedLenFeature([], tf.int64)})["timestamp"]

    parts = {"validation": [], "test": []}
    for serialized, when in records.map(lambda r: (r, stamp(r))).as_numpy_iterator():
        parts["test" if int(when) >= test_from else "validation"].append(serialized)
    test_path = os.path.join(workdir.root, "test", "test.tfrecord.gz")
    os.makedirs(os.path.dirname(test_path), exist_ok=True)
    for path, rows in [(files[0], parts["validation"]), (test_path, parts["test"])]:
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for row in rows:
                writer.write(row)
    for extra in files[1:]:
        tf.io.gfile.remove(extra)
    counts = {name: len(rows) for name, rows in parts.items()}
    print(f"eval cut at {test_from} into {counts['validation']:,} validation and {counts['test']:,} test rows",
          flush=True)
    return test_path, counts


def prepare(data: str, workdir: Workdir, spec) -> tuple[str, dict]:
    """CSV, Beam pipeline and the validation/test cut, or the parts an earlier run left in ``workdir``."""
    from pipelines.run import preprocess

    test_path = os.path.join(workdir.root, "test", "test.tfrecord.gz")
    counts_path = os.path.join(workdir.root, "test", "rows.json")
    if os.path.exists(counts_path):
        print(f"reusing the data in {workdir.root}", flush=True)
        with open(counts_path) as handle:
            return test_path, json.load(handle)
    os.makedirs(workdir.raw_dir, exist_ok=True)
    csv_path = os.path.join(workdir.raw_dir, "movielens.csv")
    rows = convert(data, csv_path)
    report = preprocess(spec, csv_path, workdir.root)
    test_from = time_quantile(csv_path, TEST_FROM)
    test_path, counts = split_eval(workdir, test_from)
    counts = {"input": rows, "train": report["written"]["train"], **counts, "test_from": test_from}
    with open(counts_path, "w") as handle:
        json.dump(counts, handle)
    return test_path, counts


def markdown(comparison: dict, meta: dict) -> str:
    """The comparison's tables (:mod:`mmoe.compare_tables`) under a header saying what was run."""
    rows = meta["rows"]
    settings = ", ".join(f"`{s}`" for s in meta["settings"]) or "none: feature_specs/movielens.yaml as it is"
    means = [f"{task}, mean prediction / mean label on test: " + ", ".join(
                 f"{model} {min(values):.3f}–{max(values):.3f}" for model, values in by_model.items())
             for task, by_model in meta["mean_ratio"].items()]
    return "\n".join([
        "# MovieLens ml-latest-small: like (rating ≥ 4) and rating", "",
        f"{rows['input']:,} ratings in time order; train on the first 80% ({rows['train']:,}), pick the epoch on the "
        f"next 10% ({rows['validation']:,}, validation), read the metrics on the last 10% ({rows['test']:,}, test, "
        f"from timestamp {rows['test_from']}). {len(comparison['seeds'])} seeds; training settings: "
        f"{comparison['budget'].get('epochs')} epochs, batch {comparison['budget'].get('batch_size')}, learning rate "
        f"{comparison['budget'].get('learning_rate')}, best epoch by {meta['early_stopping']}. Settings changed: "
        f"{settings}. `mmoe compare`'s loop and tables (`mmoe.compare.run_comparison`). Took {meta['seconds']:.0f} s.",
        "", *(f"- {line}" for line in means), "",
        comparison_markdown(comparison),
    ]) + "\n"


def mean_ratios(workdir: Workdir, spec, models, seeds) -> dict:
    """``{task: {model: [mean prediction / mean label on test, per seed]}}`` for the regression tasks,
    read from each run's ``metrics.json`` (``calibration`` there; not among compare.json's compared metrics)."""
    from mmoe.compare import run_workdir

    ratios = {}
    for task in (t for t in spec.tasks if t.kind == "regression"):
        for model in models:
            for seed in seeds:
                with open(os.path.join(run_workdir(workdir, model, seed).model_dir, "metrics.json")) as handle:
                    value = json.load(handle)[task.name]["calibration"]
                ratios.setdefault(task.name, {}).setdefault(model, []).append(value)
    return ratios


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help=f"the ml-latest-small folder with ratings.csv and movies.csv (default: {DEFAULT_DATA})")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="settings",
                        help="change a setting of the spec for every model, as `mmoe compare --set` does "
                        "(e.g. training.epochs=8; repeatable)")
    parser.add_argument("--workdir", default=None, help="where the Beam output goes (default: a temporary "
                        "directory); one an earlier run prepared is reused, and so are its finished runs")
    parser.add_argument("--name", default="movielens", help="results file name (default: movielens)")
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.data, "ratings.csv")):
        parser.error(f"{args.data}/ratings.csv not found: pass --data with the ml-latest-small folder")

    started = time.time()
    workdir = Workdir(args.workdir or tempfile.mkdtemp(prefix="movielens_"))
    base = load_spec(bundled_spec_path("movielens"))
    test_path, rows = prepare(args.data, workdir, base)
    spec = with_settings(base, args.settings)
    comparison = run_comparison(spec, workdir, models=args.models, seeds=args.seeds, evaluation_files=[test_path])
    meta = {"data": os.path.basename(os.path.normpath(args.data)), "rows": rows, "settings": args.settings,
            "early_stopping": spec.training.early_stopping.metric, "seconds": time.time() - started,
            "mean_ratio": mean_ratios(workdir, spec, comparison["models"], comparison["seeds"]),
            "note": "metrics on the last 10% of the ratings in time; the kept epoch picked on the 10% before",
            "loop": "mmoe.compare.run_comparison (mmoe.loop.Trainer, Adam, best epoch by the spec's early_stopping)",
            "machine": describe_cpu()}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.name}.json"), "w") as handle:
        json.dump({**comparison, "meta": meta}, handle, indent=2)
    table = markdown(comparison, meta)
    with open(os.path.join(RESULTS, f"{args.name}.md"), "w") as handle:
        handle.write(table)
    print(table)
    return comparison


if __name__ == "__main__":
    main()
