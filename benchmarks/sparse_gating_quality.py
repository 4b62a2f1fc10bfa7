"""Quality of sparse gates and of staged training, at the same budget as dense joint training.

Two studies, each on census-income (the MMoE paper's group 1: income and never-married, read as in
``benchmarks/census_income.py``) and on generated click logs (``data_sets/clicklog.py``: click and
engagement); every variant is trained by the project's loop (``mmoe.loop.Trainer``) with the same
data, epochs, batch, learning rate and seeds, the best epoch kept by validation loss:

* ``--study sparse``: MMoE with dense softmax gates against ``gate_top_k: 2`` (sparse dispatch,
  capacity factor 1.25) and ``gate_type: dselect_k`` (k = 2), at E = 8, and top-k at E = 32;
  top-k also with the load-balancing loss (``load_balance_weight: 0.01``), which fills the
  experts' capacity more evenly.
* ``--study staged``: joint training against ``training.expert_stage_epochs: 2,
  gate_stage_epochs: 1`` then joint epochs, the same total epochs.

Per run: AUC of each binary task on held-out rows (census: the test quarter; clicklog: the eval
split), and how evenly the experts are used: the entropy (nats) of each task's mean gate weight
over experts (log E when all are used equally) and the mean per-example gate entropy.

    .venv/bin/python benchmarks/sparse_gating_quality.py --study sparse --data-sets census clicklog --seeds 1 2 3
    .venv/bin/python benchmarks/sparse_gating_quality.py --study staged --data-sets census --seeds 1 2 3

Writes benchmarks/results/sparse_gating_<study>.json: ``{"<data set>": {"<variant>": {"<task>_auc":
[per seed], "<task>_usage_entropy": [...], ...}}, "meta": {...}}``.
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

import keras  # noqa: E402
import numpy as np  # noqa: E402

from feature_specs.artifacts import Workdir  # noqa: E402
from feature_specs.spec import EarlyStopping  # noqa: E402
from feature_specs.spec_reader import bundled_spec_path, load_spec  # noqa: E402
from machine import describe_cpu  # noqa: E402
from mmoe.data import split_files  # noqa: E402
from mmoe.evaluate import collect_predictions, compute_metrics  # noqa: E402
from mmoe.loop import Trainer  # noqa: E402
from mmoe.model import GATE_WEIGHTS  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CENSUS = os.path.join(ROOT, "..", "shared", "data", "census-income", "census-income.test.gz")
SPARSE_VARIANTS = {  # name -> model overrides
    "dense_e8": {"num_experts": 8},
    "top_k2_e8": {"num_experts": 8, "gate_top_k": 2},
    "dselect_k2_e8": {"num_experts": 8, "gate_top_k": 2, "gate_type": "dselect_k"},
    "top_k2_e32": {"num_experts": 32, "gate_top_k": 2},
    "top_k2_e8_balanced": {"num_experts": 8, "gate_top_k": 2, "load_balance_weight": 0.01},
    "top_k2_e32_balanced": {"num_experts": 32, "gate_top_k": 2, "load_balance_weight": 0.01},
}
STAGED_VARIANTS = {  # name -> training overrides
    "joint": {},
    "staged": {"expert_stage_epochs": 2, "gate_stage_epochs": 1},
}


def prepare_census(root: str, args):
    """Census rows converted, preprocessed by the Beam pipeline, eval split into validation/test."""
    from census_income import split_eval
    from data_sets.census import convert
    from pipelines.run import preprocess

    workdir = Workdir(root)
    spec = load_spec(bundled_spec_path("census_income"))
    test_path = os.path.join(root, "test", "test.tfrecord.gz")
    if not os.path.exists(test_path):
        os.makedirs(workdir.raw_dir, exist_ok=True)
        csv_path = os.path.join(workdir.raw_dir, "census.csv")
        convert(args.census, csv_path, args.rows)
        preprocess(spec, csv_path, root)
        test_path = split_eval(workdir)
    return spec, workdir, [test_path]


def prepare_clicklog(root: str, args):
    """Generated click logs (seed 11), preprocessed by the Beam pipeline; scored on the eval split."""
    from data_sets.clicklog import generate_clicklog
    from pipelines.run import preprocess

    workdir = Workdir(root)
    spec = load_spec(bundled_spec_path("clicklog"))
    if not os.path.exists(os.path.join(root, "report.json")):
        generate_clicklog(workdir.raw_dir, rows=args.rows, seed=11)
        preprocess(spec, os.path.join(workdir.raw_dir, "impressions-*.parquet"), root)
    return spec, workdir, split_files(workdir, "eval")


PREPARE = {"census": prepare_census, "clicklog": prepare_clicklog}


def usage(gate_weights: np.ndarray, task_names) -> dict:
    """Per task: entropy of the mean gate weight over experts, and the mean per-row gate entropy."""
    out = {}
    for t, task in enumerate(task_names):
        weights = gate_weights[:, t].astype(np.float64)
        mean = weights.mean(axis=0)
        out[f"{task}_usage_entropy"] = float(-(mean * np.log(np.clip(mean, 1e-12, 1))).sum())
        out[f"{task}_row_entropy"] = float(-(weights * np.log(np.clip(weights, 1e-12, 1))).sum(-1).mean())
    return out


def run_once(spec, workdir: Workdir, test_files, name: str, seed: int, model: dict, training: dict, args) -> dict:
    spec = dataclasses.replace(
        spec,
        model=dataclasses.replace(spec.model, architecture="mmoe", **model),
        training=dataclasses.replace(
            spec.training, seed=seed, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.learning_rate, early_stopping=EarlyStopping(metric="val_loss", patience=0), **training,
        ),
    )
    keras.utils.set_random_seed(seed)
    run_dir = dataclasses.replace(workdir, model_root=os.path.join(workdir.root, "runs", f"{name}-{seed}"))
    started = time.time()
    trainer = Trainer(spec, run_dir)
    trainer.clear_checkpoints()
    history = trainer.fit(verbose=0)
    trainer.clear_checkpoints()
    collected = collect_predictions(spec, trainer.models.serving, test_files)
    metrics = compute_metrics(spec, collected)
    result = {f"{t.name}_auc": metrics[t.name]["auc"] for t in spec.tasks if t.kind == "binary"}
    result.update(usage(collected[GATE_WEIGHTS], spec.task_names))
    if "dispatch_dropped" in history:
        result["dispatch_dropped"] = float(np.mean(history["dispatch_dropped"]))
    result["seconds"] = time.time() - started
    print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
    return result


def summary(runs: dict) -> dict:
    """Mean and sample standard deviation over seeds of every figure."""
    return {
        variant: {key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                  for key, v in figures.items()}
        for variant, figures in runs.items()
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=["sparse", "staged"], default="sparse")
    parser.add_argument("--data-sets", nargs="+", choices=sorted(PREPARE), default=["census", "clicklog"])
    parser.add_argument("--census", default=CENSUS, help="census-income.test.gz")
    parser.add_argument("--rows", type=int, default=40_000, help="rows of each data set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--variants", nargs="*", help="a subset of the study's variants")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sparse_gating_quality"))
    args = parser.parse_args(argv)
    variants = SPARSE_VARIANTS if args.study == "sparse" else STAGED_VARIANTS
    names = args.variants or list(variants)
    started = time.time()
    results: dict = {"meta": {"study": args.study, "args": vars(args), "machine": describe_cpu()}}
    for data_set in args.data_sets:
        spec, workdir, test_files = PREPARE[data_set](os.path.join(args.workdir, data_set), args)
        runs: dict = {}
        for seed in args.seeds:  # seeds outermost: a load change hits every variant alike
            for name in names:
                model, training = (variants[name], {}) if args.study == "sparse" else ({}, variants[name])
                for key, value in run_once(spec, workdir, test_files, name, seed, model, training, args).items():
                    runs.setdefault(name, {}).setdefault(key, []).append(value)
        results[data_set] = {"runs": runs, "summary": summary(runs)}
    results["meta"]["seconds"] = time.time() - started
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"sparse_gating_{args.study}.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
