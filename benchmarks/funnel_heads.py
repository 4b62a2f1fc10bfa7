"""Click -> conversion heads: ESMM and AITM against MMoE with a conversion task masked by the
click, on the generated funnel (conversion only observed after a click) and on the AliExpress
sample, over several seeds, with the same backbone, loop and budget.

Per data set, head and seed: CTR AUC (every impression), CVR AUC on clicked rows (the masked
task's own prediction; the funnel heads' served ``conversion_given_click_probability``), CTCVR
AUC (every impression, label "clicked and converted": the funnel heads' own prediction; for the
masked task pCTR x pCVR), and on generated data, where every row carries the conversion it would
have had if clicked, CVR AUC over every impression (the bias ESMM removes shows there).

    .venv/bin/python benchmarks/funnel_heads.py --seeds 1 2 3 --out benchmarks/results/funnel_heads.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import numpy as np

HEADS = ("masked", "esmm", "aitm")
DATA_SETS = ("generated", "aliexpress")
DEFAULT_ALIEXPRESS = "tests/data/aliexpress/*.csv"  # all 320 rows; ../shared/data/aliexpress holds the same


def head_spec(spec, head: str, seed: int):
    """``spec`` with its conversion task as a masked tower (``masked``) or a funnel head after click."""
    def changed(task):
        if task.name != "conversion":
            return task
        if head == "masked":
            return dataclasses.replace(task, after=None, head="tower", mask="click")
        return dataclasses.replace(task, after="click", head=head, mask=None)

    return dataclasses.replace(spec, tasks=tuple(changed(t) for t in spec.tasks),
                               training=dataclasses.replace(spec.training, seed=seed))


def funnel_aucs(spec, collected: dict) -> dict:
    """The four AUCs of one trained model from its eval predictions (see the module docstring)."""
    from mmoe.metrics import exact_auc

    click, conversion = collected["click"] > 0, collected["conversion"] > 0
    p_click = collected["click_probability"]
    task = spec.task("conversion")
    if task.after is None:  # masked: the task's own output is the conversion rate given a click
        p_cvr = collected["conversion_probability"]
        p_ctcvr = p_click * p_cvr
    else:
        p_cvr = collected["conversion_given_click_probability"]
        p_ctcvr = collected["conversion_probability"]
    result = {
        "ctr_auc": exact_auc(click, p_click),
        "cvr_auc_clicked": exact_auc(conversion[click], p_cvr[click]),
        "ctcvr_auc": exact_auc(conversion, p_ctcvr),
    }
    if "would_convert" in collected:
        result["cvr_auc_all"] = exact_auc(collected["would_convert"] > 0, p_cvr)
    return result


def column_values(files, name: str) -> np.ndarray:
    """An int column of the written examples, in the order :func:`mmoe.evaluate.collect_predictions` reads them."""
    import tensorflow as tf

    from mmoe.data import read_records

    feature = {name: tf.io.FixedLenFeature([], tf.int64)}
    records = read_records(files).batch(4096)
    return np.concatenate([tf.io.parse_example(batch, feature)[name].numpy() for batch in records])


def run_data_set(name: str, spec, pattern: str, root: str, seeds) -> dict:
    from feature_specs.artifacts import Workdir
    from mmoe.data import split_files
    from mmoe.evaluate import collect_predictions
    from mmoe.train import train
    from pipelines.run import preprocess

    results = {}
    workdirs = {}
    for head in HEADS:
        # the masked task's label mean (its start) is over clicked rows: its own preprocessing
        key = "masked" if head == "masked" else "funnel"
        if key not in workdirs:
            workdirs[key] = Workdir(os.path.join(root, name, key))
            preprocess(head_spec(spec, head, seeds[0]), pattern, workdirs[key])
        runs: dict[str, list] = {}
        for seed in seeds:
            started = time.time()
            variant = head_spec(spec, head, seed)
            trained = train(variant, workdirs[key], verbose=0, resume=False)
            files = split_files(workdirs[key], "eval")
            collected = collect_predictions(variant, trained.models.serving, files)
            if "would_convert" in {c.name for c in variant.columns}:
                collected["would_convert"] = column_values(files, "would_convert")
            for metric, value in {**funnel_aucs(variant, collected), "seconds": round(time.time() - started, 1)}.items():
                runs.setdefault(metric, []).append(value)
            print(name, head, seed, {k: round(v[-1], 4) for k, v in runs.items()}, flush=True)
        runs["mean"] = {k: float(np.nanmean(v)) for k, v in runs.items() if k != "seconds"}
        runs["std"] = {k: float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in runs.items()
                       if k not in ("seconds", "mean")}
        results[head] = runs
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="generated impressions")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--click-bias", type=float, default=None,
                        help="the generator's click_bias (default: FunnelConfig's); lower: sparser clicks")
    parser.add_argument("--aliexpress", default=DEFAULT_ALIEXPRESS, help="AliExpress CSV pattern")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--data-sets", nargs="+", default=list(DATA_SETS), choices=DATA_SETS)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results/funnel_heads.json")
    args = parser.parse_args(argv)

    from data_sets.funnel import FunnelConfig, generate_funnel
    from feature_specs.spec_reader import bundled_spec_path, load_spec
    from machine import describe_cpu

    root = args.workdir or tempfile.mkdtemp(prefix="funnel_heads_")
    results: dict = {"seeds": args.seeds, "rows": args.rows, "data_seed": args.data_seed,
                     "machine": describe_cpu(), "data_sets": {}}
    for name in args.data_sets:
        if name == "generated":
            config = FunnelConfig() if args.click_bias is None else FunnelConfig(click_bias=args.click_bias)
            results["generator"] = dataclasses.asdict(config)
            pattern = generate_funnel(os.path.join(root, "raw"), rows=args.rows, seed=args.data_seed, config=config)
            spec = load_spec(bundled_spec_path("funnel"))
        else:
            pattern, spec = args.aliexpress, load_spec(bundled_spec_path("aliexpress"))
        results["data_sets"][name] = run_data_set(name, spec, pattern, root, args.seeds)
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2, sort_keys=True)
    return results


if __name__ == "__main__":
    main()
