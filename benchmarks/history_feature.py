"""What a behaviour history costs in the pipeline and what it does to click AUC.

Data: the generated clicklog (``data_sets/clicklog.py``) with a **drifting interest**
(``interest_weight``): each user's category of interest changes every 3.5 days and lifts the
click logit where the candidate matches it. A user id's embedding can only learn the average;
the categories the user clicked recently reveal the current one.

The history feature (``clicked_categories``): the user's last 10 clicked item categories
strictly before each impression (``pipelines/history.py``), a vocabulary over the elements and
a mean-pooled embedding. The spec is ``feature_specs/clicklog.yaml`` plus that feature.

1. **Pipeline cost**: ``preprocess`` of ``--rows`` impressions (default 1,000,000, Parquet) with
   and without the history feature, alternately, ``--repeats`` times each, in this process; the
   fastest run of each counts (other processes can only slow one down).
2. **Quality**: on ``--quality-rows`` impressions (default 200,000), one preprocess with the
   history spec; then the default MMoE is trained with and without the feature on the same
   TFRecords, with the same loop, budget and seeds (``mmoe.compare.train_and_evaluate``), and
   paired by seed (``mmoe.paired``); a third arm pools the history by attention to the
   candidate's category (``list.pooling: attention``, Deep Interest Network's activation unit).

    .venv/bin/python benchmarks/history_feature.py                      # 1M rows timed, 200k x 3 seeds
    .venv/bin/python benchmarks/history_feature.py --rows 200000 --seeds 1 --quality-rows 50000

Writes ``benchmarks/results/history_feature.json`` (``--output``):
``{"pipeline": {"rows", "rows_per_s": {"without", "with"}, "with_over_without", "seconds"},
"quality": {"rows", "interest_weight", "seeds",
"models": {"without"|"with"|"with_attention": {task: {metric: [per seed]}}},
"paired": {"with"|"with_attention": {task: {metric: compare_metric dict, against "without"}}}, "true_logit_auc": {"without_interest", "with_interest"}},
"machine", "seconds"}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data_sets.clicklog import generate_clicklog  # noqa: E402
from feature_specs.artifacts import Workdir  # noqa: E402
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict  # noqa: E402
from machine import describe_cpu  # noqa: E402

HISTORY_FEATURE = {
    "name": "clicked_categories", "type": "string", "transform": "vocabulary", "top_k": 100, "embedding_dim": 8,
    "list": {"max_length": 10, "pooling": "mean"},
    "history": {"user": "user_id", "item": "item_category", "time": "timestamp", "positive": "clicked"},
}
INTEREST_WEIGHT = 3.0  # the drifting interest's click-logit weight (data_sets/clicklog.py)
QUALITY_METRICS = ("auc", "gauc", "log_loss", "rmse_seconds")


def specs(pooling: str = "mean"):
    """``(without, with)``: the bundled clicklog spec, and the same plus the history feature pooled
    by ``pooling`` (``attention``: to the candidate's ``item_category``, DIN)."""
    base = load_spec(bundled_spec_path("clicklog"))
    data = base.to_dict()
    feature = {**HISTORY_FEATURE, "list": {**HISTORY_FEATURE["list"], "pooling": pooling}}
    if pooling == "attention":
        feature["list"]["target"] = "item_category"
    data["features"].append(feature)
    return base, spec_from_dict(data, source="benchmarks/history_feature.py")


def pipeline_cost(rows: int, repeats: int, interest_weight: float, scratch: str) -> dict:
    """rows/s of ``preprocess`` without and with the history feature (fastest of ``repeats`` each)."""
    from pipelines.run import preprocess

    raw = os.path.join(scratch, "raw_timing")
    print(f"generating {rows:,} rows ...", flush=True)
    generate_clicklog(raw, rows=rows, seed=0, interest_weight=interest_weight, corrupt_fraction=0.001)
    seconds = {"without": [], "with": []}
    for repeat in range(repeats):
        for name, spec in zip(("without", "with"), specs()):
            workdir = os.path.join(scratch, f"timing_{name}")
            started = time.perf_counter()
            preprocess(spec, os.path.join(raw, "*.parquet"), workdir)
            seconds[name].append(time.perf_counter() - started)
            print(f"preprocess {name} history, run {repeat + 1}: {seconds[name][-1]:.1f} s", flush=True)
    rates = {name: rows / min(values) for name, values in seconds.items()}
    return {"rows": rows, "rows_per_s": rates, "with_over_without": rates["with"] / rates["without"],
            "seconds": seconds}


def oracle_auc(raw: str, rows: int, interest_weight: float) -> dict:
    """Click AUC of the generator's true logit without and with the interest term, on the rows in
    ``raw``: the most any model can gain from knowing the current interest."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from data_sets.clicklog import DEVICES, ClicklogWorld
    from mmoe.metrics import exact_auc

    log = pq.read_table(raw).drop_null()
    log = log.filter(pc.greater_equal(log.column("position"), 1))  # the dirt's position 0 has no bias term
    world = ClicklogWorld.for_rows(rows, seed=0)
    users = np.array([int(u[1:]) for u in log.column("user_id").to_pylist()])
    items = np.array([int(i[1:]) for i in log.column("item_id").to_pylist()])
    devices = np.array([DEVICES.index(d) for d in log.column("device").to_pylist()])
    base = world._click_logit(users, items, log.column("hour").to_numpy(), devices, log.column("position").to_numpy())
    interest = interest_weight * world.interest_match(users, items, log.column("timestamp").to_numpy())
    labels = log.column("clicked").to_numpy()
    return {"without_interest": exact_auc(labels, base), "with_interest": exact_auc(labels, base + interest)}


def quality(rows: int, seeds: list[int], interest_weight: float, scratch: str) -> dict:
    """Click and engagement metrics of the default MMoE without and with the history, paired by seed."""
    import numpy as np

    from mmoe.compare import run_spec, run_workdir, train_and_evaluate
    from mmoe.paired import compare_metric, metric_rule
    from pipelines.run import preprocess

    raw = os.path.join(scratch, "raw_quality")
    generate_clicklog(raw, rows=rows, seed=0, interest_weight=interest_weight, corrupt_fraction=0.001)
    without, with_history = specs()
    arms = (("without", without), ("with", with_history), ("with_attention", specs("attention")[1]))
    workdir = Workdir(os.path.join(scratch, "quality"))
    preprocess(with_history, os.path.join(raw, "*.parquet"), workdir)  # its TFRecords hold every column
    models = {name: {} for name, _ in arms}
    for seed in seeds:
        for name, spec in arms:
            started = time.perf_counter()
            metrics = train_and_evaluate(run_spec(spec, spec.model.architecture, seed),
                                         run_workdir(workdir, f"{name}_history", seed))
            for task in spec.task_names:
                for metric in QUALITY_METRICS:
                    if metric in metrics[task]:
                        models[name].setdefault(task, {}).setdefault(metric, []).append(float(metrics[task][metric]))
            print(f"seed {seed} {name} history: click AUC {metrics['click']['auc']:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    paired = {arm: {task: {metric: compare_metric(values, models["without"][task][metric], metric_rule(metric))
                           for metric, values in by_metric.items()}
                    for task, by_metric in models[arm].items()}
              for arm in ("with", "with_attention")}
    summary = {name: {task: {metric: [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0]
                             for metric, v in by_metric.items()} for task, by_metric in by_task.items()}
               for name, by_task in models.items()}
    return {"rows": rows, "interest_weight": interest_weight, "seeds": seeds, "models": models,
            "mean_and_sd": summary, "paired": paired, "true_logit_auc": oracle_auc(raw, rows, interest_weight)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="impressions for the pipeline timing")
    parser.add_argument("--repeats", type=int, default=2, help="timed preprocess runs per spec")
    parser.add_argument("--quality-rows", type=int, default=200_000, help="impressions for the AUC study")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (from the spec's training.seed)")
    parser.add_argument("--interest-weight", type=float, default=INTEREST_WEIGHT)
    parser.add_argument("--skip-timing", action="store_true", help="only the AUC study")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "history_feature.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    base_seed = specs()[0].training.seed
    result = {"machine": {**describe_cpu(), "cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="history_feature_") as scratch:
        if not args.skip_timing:
            result["pipeline"] = pipeline_cost(args.rows, args.repeats, args.interest_weight, scratch)
            print(json.dumps({k: v for k, v in result["pipeline"].items() if k != "seconds"}), flush=True)
        result["quality"] = quality(args.quality_rows, [base_seed + k for k in range(args.seeds)],
                                    args.interest_weight, scratch)
    result["seconds"] = time.perf_counter() - started
    for arm, by_task in result["quality"]["paired"].items():
        paired = by_task["click"]["auc"]
        print(f"click AUC {arm} - without history: {paired['mean']:+.4f} [{paired['low']:+.4f}, "
              f"{paired['high']:+.4f}] ({paired['outcome']})")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2, default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else str(o))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
