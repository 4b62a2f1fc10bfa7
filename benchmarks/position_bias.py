"""Position bias on the generator's data, whose bias is known: what the shallow bias tower learns.

The clicklog generator adds ``-0.35 * log(position)`` to the click logit (data_sets/clicklog.py). The
MMoE's bias tower (Zhao et al., RecSys 2019) sees only ``position``; its logit is added to the
click logit in training and fixed at serving (``serving_value: 1``). This script trains the
clicklog model twice on the same data, with the bias tower and without position at all, and
reports:

* the position curve the bias tower learned, ``bias(k) - bias(1)``, against the generator's;
* calibration at the top slot: the served click probability (which means "if shown first") against
  the observed CTR of eval rows shown at position 1, for both models.

    .venv/bin/python benchmarks/position_bias.py [--rows 100000] [--epochs 3]

Writes benchmarks/results/position_bias.{json,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from feature_specs.artifacts import Workdir  # noqa: E402
from feature_specs.spec_reader import bundled_spec_path, load_spec  # noqa: E402
from mmoe.data import raw_batches, split_files  # noqa: E402
from mmoe.evaluate import collect_predictions  # noqa: E402
from data_sets.clicklog import generate_clicklog, position_bias  # noqa: E402
from mmoe.train import train  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
POSITIONS = np.arange(1, 11)


def learned_position_curve(models, spec, workdir: Workdir) -> list[float]:
    """Mean over eval rows of ``logit(position=k) - logit(position=1)`` from the training model."""
    batch = next(iter(raw_batches(split_files(workdir, "eval"), spec, 2048)))
    features = {f.name: batch[f.name] for f in spec.features}
    logits = []
    for k in POSITIONS:
        features["position"] = tf.fill(tf.shape(batch["position"]), tf.constant(int(k), tf.int64))
        logits.append(np.asarray(models.train.predict_on_batch(features)["click"])[:, 0].mean())
    return [float(v - logits[0]) for v in logits]


def top_slot_calibration(models, spec, workdir: Workdir) -> dict:
    collected = collect_predictions(spec, models.serving, split_files(workdir, "eval"))
    at_top = collected["position"] == 1
    return {
        "observed_ctr_at_position_1": float(collected["clicked"][at_top].mean()),
        "served_mean_probability": float(collected["click_probability"].mean()),
        "observed_ctr_all_positions": float(collected["clicked"].mean()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from pipelines.run import preprocess

    root = tempfile.mkdtemp(prefix="position_bias_")
    spec = load_spec(bundled_spec_path("clicklog"))
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, epochs=args.epochs))
    no_position = dataclasses.replace(spec, features=tuple(f for f in spec.features if f.role != "bias"))
    raw = os.path.join(root, "raw")
    generate_clicklog(raw, rows=args.rows, seed=args.seed)
    workdir = Workdir(os.path.join(root, "run"))
    preprocess(spec, os.path.join(raw, "impressions-*.parquet"), workdir.root)

    with_tower = train(spec, workdir, verbose=0)
    curve = learned_position_curve(with_tower.models, spec, workdir)
    results = {
        "positions": POSITIONS.tolist(),
        "true_curve": [float(position_bias(k) - position_bias(1)) for k in POSITIONS],
        "learned_curve": curve,
        "with_bias_tower": {"click_auc": with_tower.metrics["click"]["auc"], **top_slot_calibration(with_tower.models, spec, workdir)},
    }
    without = train(no_position, workdir, verbose=0)
    # same model features, so the full spec parses the eval rows (position included) for both
    results["without_position"] = {"click_auc": without.metrics["click"]["auc"], **top_slot_calibration(without.models, spec, workdir)}
    results["rows"], results["epochs"] = args.rows, args.epochs

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "position_bias.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.4))
    axis.plot(POSITIONS, results["true_curve"], marker="o", label="generator: -0.35 log(k)")
    axis.plot(POSITIONS, curve, marker="s", label="learned by the bias tower")
    axis.set_xlabel("position k")
    axis.set_ylabel("click logit vs position 1")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.savefig(os.path.join(RESULTS, "position_bias.png"), dpi=110, bbox_inches="tight")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
