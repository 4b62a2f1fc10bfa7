"""One spec setting on the default run's data: `mmoe train`'s model and metrics over several seeds.

`mmoe compare` reports each task's headline metric for several architectures; this reports what
the default run's `metrics.json` holds (click AUC, NDCG@10, MRR, engagement RMSE, Spearman and
mean calibration) for the spec's own architecture, seed by seed, so that a setting can be judged
by the ranking as well as by each task. Each seed trains in a fresh copy of the workdir's
`data/` and `artifacts/` (the same split, vocabularies and statistics for every seed and setting).

    .venv/bin/mmoe run --workdir runs/clicklog                      # the default run's data
    .venv/bin/python benchmarks/run_seeds.py runs/clicklog --output /tmp/as_is.json
    .venv/bin/python benchmarks/run_seeds.py runs/clicklog --set tasks.engagement.weight=0.2 \\
        --output /tmp/weight02.json --against /tmp/as_is.json

Writes ``{"settings": [...], "seeds": [...], "metrics": {"<metric>": [per seed, ...]}, "machine"}``;
with ``--against``, prints each metric's change paired by seed with its 95% t-interval.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from feature_specs.artifacts import Workdir  # noqa: E402
from feature_specs.spec_reader import bundled_spec_path, load_spec  # noqa: E402
from mmoe.compare import with_settings  # noqa: E402
from mmoe.paired import paired_interval  # noqa: E402

from machine import describe_cpu  # noqa: E402

METRICS = {  # name in the output -> (metrics.json section, key)
    "click_auc": ("click", "auc"), "ndcg@10": ("ranking", "ndcg@10"), "mrr": ("ranking", "mrr"),
    "engagement_rmse_seconds": ("engagement", "rmse_seconds"), "engagement_spearman": ("engagement", "spearman"),
    "engagement_calibration": ("engagement", "calibration"),
}


def run_seed(spec, source: Workdir, seed: int) -> dict:
    """Trains ``spec`` with ``training.seed = seed`` on a copy of ``source``'s data; its metrics."""
    from mmoe.train import train

    spec = with_settings(spec, [f"training.seed={seed}"])
    with tempfile.TemporaryDirectory(prefix="run_seeds_") as root:
        for part in ("data", "artifacts"):
            shutil.copytree(os.path.join(source.root, part), os.path.join(root, part))
        shutil.copy(source.report_json, root)
        workdir = Workdir(root)
        train(spec, workdir, verbose=0)
        with open(workdir.metrics_json, encoding="utf-8") as handle:
            metrics = json.load(handle)
    return {name: float(metrics[section][key]) for name, (section, key) in METRICS.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="a workdir preprocessed for the spec (e.g. after `mmoe run`)")
    parser.add_argument("--spec", default=bundled_spec_path("clicklog"), help="default: feature_specs/clicklog.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="settings")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46, 47, 48, 49])
    parser.add_argument("--output", required=True)
    parser.add_argument("--against", help="an earlier output of this script, same seeds: print paired changes")
    args = parser.parse_args(argv)
    spec = with_settings(load_spec(args.spec), args.settings)
    source = Workdir(args.workdir)
    per_seed = []
    for seed in args.seeds:
        per_seed.append(run_seed(spec, source, seed))
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in per_seed[-1].items()), flush=True)
    result = {"settings": args.settings, "seeds": args.seeds, "spec": os.path.basename(args.spec),
              "metrics": {name: [row[name] for row in per_seed] for name in METRICS}, "machine": describe_cpu()}
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    if args.against:
        with open(args.against, encoding="utf-8") as handle:
            before = json.load(handle)
        if before["seeds"] != args.seeds:
            raise SystemExit(f"--against ran seeds {before['seeds']}, this run {args.seeds}")
        print(f"change against {args.against} ({', '.join(before['settings']) or 'the spec as it is'}), paired by seed:")
        for name in METRICS:
            interval = paired_interval([a - b for a, b in zip(result["metrics"][name], before["metrics"][name])])
            print(f"  {name}: {interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]")
    return result


if __name__ == "__main__":
    main()
