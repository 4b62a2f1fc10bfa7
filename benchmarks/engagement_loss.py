"""Engagement as a mean: the bundled clicklog spec's engagement loss (MSE on log1p seconds) against
the mean losses (``ziln``, ``tweedie``), on the default run's data, over several seeds.

Each loss gets its own preprocessing (the train split's label mean, which starts the head, is
taken in the loss's label space), then the same model, loop and budget as ``mmoe run``, once per
seed. Reported per loss and seed: the eval split's mean predicted and observed engagement (the
target: within 10%), engagement Spearman and long-view AUC, click AUC and gAUC, NDCG@10.

    .venv/bin/python benchmarks/engagement_loss.py --seeds 1 2 3 --out benchmarks/results/engagement_loss.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import numpy as np

VARIANTS = {  # name -> engagement task fields changed from the bundled spec
    "mse_log1p": {},
    "ziln": {"loss": "ziln", "label_transform": "none"},
    "tweedie": {"loss": "tweedie", "label_transform": "none"},
}
REPORTED = {  # key in the JSON -> (metrics.json section, key)
    "engagement_mean_prediction": ("engagement", "mean_prediction"),
    "engagement_mean_label": ("engagement", "mean_label"),
    "engagement_calibration": ("engagement", "calibration"),
    "engagement_spearman": ("engagement", "spearman"),
    "engagement_long_auc": ("engagement", "long_auc"),
    "engagement_rmse_seconds": ("engagement", "rmse_seconds"),
    "click_auc": ("click", "auc"),
    "click_gauc": ("click", "gauc"),
    "ndcg@10": ("ranking", "ndcg@10"),
}


def variant_spec(spec, changes: dict, seed: int):
    tasks = tuple(dataclasses.replace(t, **changes) if t.name == "engagement" else t for t in spec.tasks)
    ranking = dataclasses.replace(spec.ranking, user_key=spec.ranking.user_key or "user_id")
    return dataclasses.replace(spec, tasks=tasks, ranking=ranking,
                               training=dataclasses.replace(spec.training, seed=seed))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="generated impressions (mmoe run's default)")
    parser.add_argument("--data-seed", type=int, default=0, help="generator seed (mmoe run's default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's epochs")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results/engagement_loss.json")
    args = parser.parse_args(argv)

    from data_sets.clicklog import generate_clicklog
    from feature_specs.artifacts import Workdir
    from feature_specs.spec_reader import bundled_spec_path, load_spec
    from mmoe.train import train
    from pipelines.run import preprocess

    from machine import describe_cpu

    root = args.workdir or tempfile.mkdtemp(prefix="engagement_loss_")
    raw = os.path.join(root, "raw")
    generate_clicklog(raw, rows=args.rows, seed=args.data_seed, corrupt_fraction=0.001)
    bundled = load_spec(bundled_spec_path("clicklog"))
    if args.epochs:
        bundled = dataclasses.replace(bundled, training=dataclasses.replace(bundled.training, epochs=args.epochs))
    results: dict = {"rows": args.rows, "data_seed": args.data_seed, "seeds": args.seeds,
                     "epochs": bundled.training.epochs, "machine": describe_cpu(), "variants": {}}
    for name in args.variants:
        workdir = Workdir(os.path.join(root, name))
        preprocess(variant_spec(bundled, VARIANTS[name], args.seeds[0]), os.path.join(raw, "impressions-*.parquet"),
                   workdir)
        runs = {key: [] for key in REPORTED}
        runs["seconds"] = []
        for seed in args.seeds:
            started = time.time()
            metrics = train(variant_spec(bundled, VARIANTS[name], seed), workdir, verbose=0, resume=False).metrics
            runs["seconds"].append(round(time.time() - started, 1))
            for key, (section, metric) in REPORTED.items():
                runs[key].append(metrics[section][metric])
            print(name, seed, {k: round(v[-1], 4) for k, v in runs.items()}, flush=True)
        runs["mean"] = {k: float(np.mean(v)) for k, v in runs.items() if k != "seconds"}
        runs["std"] = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in runs.items()
                       if k not in ("seconds", "mean")}
        results["variants"][name] = runs
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2, sort_keys=True)
    return results


if __name__ == "__main__":
    main()
