"""The MMoE paper's synthetic task-correlation experiment (Ma et al., KDD 2018, section 3.2).

For each task correlation p and repeat r: draw fresh data (data_sets/correlation.py), train MMoE,
OMoE (8 experts of 16 units, towers of 8) and a shared-bottom model of matched size (bottom width
113, towers of 8) on the two regression tasks with the same data and seed, and record the final
eval loss (mean of the two tasks' MSE). The paper's finding: MMoE stays nearly flat as p falls,
OMoE degrades, both beat shared-bottom on average; shared-bottom varies most between runs.

    .venv/bin/python benchmarks/synthetic_correlation.py            # 10 repeats, ~15 min on 2 idle cores
    .venv/bin/python benchmarks/synthetic_correlation.py --repeats 2 --epochs 5   # a quick look

    .venv/bin/python benchmarks/synthetic_correlation.py --alpha-scale 0.1 --name synthetic_correlation_smooth

Writes benchmarks/results/<name>.{json,md,png} (default name synthetic_correlation); the JSON is
``{"<model>": {"<correlation>": [final eval loss per repeat]}}``, with ``linear_regression`` (least
squares on x, the floor of learning only the linear parts) as one more model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from data_sets.correlation import CorrelationDataConfig, make_correlated_tasks  # noqa: E402
from mmoe.layers import MLP, MMoE, OMoE  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TASKS = ("y1", "y2")
MODELS = ("mmoe", "omoe", "shared_bottom")
LINEAR = "linear_regression"  # the floor of learning only w_kᵀx


def build(model_name: str, dim: int, experts: int, expert_units: int, tower_units: int, bottom_units: int):
    """A two-task regression model on dense inputs ``(batch, dim)``."""
    inputs = keras.Input(shape=(dim,))
    if model_name == "shared_bottom":
        bottom = MLP([bottom_units], name="bottom")(inputs)
        hidden = {task: bottom for task in TASKS}
    else:
        layer_cls = MMoE if model_name == "mmoe" else OMoE
        hidden, _ = layer_cls(list(TASKS), num_experts=experts, expert_units=[expert_units], name=model_name)(inputs)
    outputs = {task: MLP([tower_units, 1], output_activation=None, name=f"tower_{task}")(hidden[task]) for task in TASKS}
    return keras.Model(inputs, outputs)


def run_once(model_name: str, data, seed: int, args) -> float:
    (x, y1, y2), (xe, ye1, ye2) = data
    keras.utils.set_random_seed(seed)
    model = build(model_name, x.shape[1], args.experts, args.expert_units, args.tower_units, args.bottom_units)
    model.compile(keras.optimizers.Adam(args.learning_rate), loss={t: "mse" for t in TASKS}, jit_compile=args.jit)
    model.fit(x, {"y1": y1, "y2": y2}, batch_size=args.batch_size, epochs=args.epochs, verbose=0, shuffle=True)
    predictions = model.predict_on_batch(xe)
    return float(np.mean([np.mean((predictions[t][:, 0] - y) ** 2) for t, y in zip(TASKS, (ye1, ye2))]))


def linear_regression_loss(data) -> float:
    """Eval MSE of least squares on the raw inputs: the floor any model reaches by learning only
    the tasks' linear parts ``w_kᵀx`` and none of the sines."""
    (x, y1, y2), (xe, ye1, ye2) = data
    design, design_eval = np.c_[x, np.ones(len(x))], np.c_[xe, np.ones(len(xe))]
    losses = []
    for y, ye in ((y1, ye1), (y2, ye2)):
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        losses.append(np.mean((design_eval @ coef - ye) ** 2))
    return float(np.mean(losses))


def parameter_counts(args, dim: int) -> dict:
    return {m: int(build(m, dim, args.experts, args.expert_units, args.tower_units, args.bottom_units).count_params())
            for m in MODELS}


def write_outputs(results: dict, args, counts: dict, seconds: float) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.name}.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    correlations = [str(p) for p in args.correlations]
    lines = [
        "# Synthetic task correlation (Ma et al. 2018, section 3.2)", "",
        f"Final eval loss (mean MSE of the two tasks), mean ± std over {args.repeats} repeats, each with fresh "
        f"data and initialization; {args.train_rows} train / {args.eval_rows} eval rows, {args.epochs} epochs, "
        f"batch {args.batch_size}, Adam {args.learning_rate}. Data: m=10 sines, c=1, α_i={args.alpha_scale:g}·i, "
        "β_i=(i−1)², σ=0.01 (α_i=i, β_i=(i−1)² are Google Research's generator's values).",
        "`linear_regression` is least squares on x: the loss of a model that learns the linear parts and none of the sines.",
        f"Parameters: {', '.join(f'{m} {counts[m]:,}' for m in MODELS)}. Took {seconds:.0f} s.", "",
        "| model | " + " | ".join(f"p={p}" for p in correlations) + " |",
        "|---|" + "---|" * len(correlations),
    ]
    for model in (*MODELS, LINEAR):
        cells = [f"{np.mean(results[model][p]):.3f} ± {np.std(results[model][p]):.3f}" for p in correlations]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    with open(os.path.join(RESULTS, f"{args.name}.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    xs = np.array(args.correlations, dtype=float)
    for offset, model in zip((-0.006, 0.0, 0.006), MODELS):
        losses = [results[model][p] for p in correlations]
        axis.errorbar(xs + offset, [np.mean(v) for v in losses], yerr=[np.std(v) for v in losses],
                      marker="o", capsize=3, label=model)
    axis.plot(xs, [np.mean(results[LINEAR][p]) for p in correlations], "k--", label="linear regression")
    axis.set_xlabel("task correlation p")
    axis.set_ylabel("final eval loss (MSE, log scale)")
    axis.set_yscale("log")
    axis.invert_xaxis()
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(f"Synthetic correlation, α_i={args.alpha_scale:g}·i, {args.repeats} repeats (mean ± std)")
    figure.savefig(os.path.join(RESULTS, f"{args.name}.png"), dpi=110, bbox_inches="tight")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--correlations", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.5])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-rows", type=int, default=50000)
    parser.add_argument("--eval-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--expert-units", type=int, default=16)
    parser.add_argument("--tower-units", type=int, default=8)
    parser.add_argument("--bottom-units", type=int, default=113)
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False, help="XLA-compile training")
    parser.add_argument("--alpha-scale", type=float, default=1.0,
                        help="α_i = scale·i; the paper's generator uses 1, smaller makes the sines learnable")
    parser.add_argument("--name", default="synthetic_correlation", help="output file stem in benchmarks/results/")
    args = parser.parse_args(argv)

    config = CorrelationDataConfig(alpha_scale=args.alpha_scale)
    counts = parameter_counts(args, config.dim)
    print(f"parameters: {counts}", flush=True)
    results = {m: {str(p): [] for p in args.correlations} for m in (*MODELS, LINEAR)}
    started = time.time()
    for repeat in range(args.repeats):
        for index, p in enumerate(args.correlations):
            seed = 1000 * repeat + index
            x, y1, y2 = make_correlated_tasks(args.train_rows + args.eval_rows, p, seed, config)
            n = args.train_rows
            data = ((x[:n], y1[:n], y2[:n]), (x[n:], y1[n:], y2[n:]))
            for model in MODELS:
                results[model][str(p)].append(run_once(model, data, seed, args))
            results[LINEAR][str(p)].append(linear_regression_loss(data))
            print(f"repeat {repeat + 1}/{args.repeats} p={p}: "
                  + ", ".join(f"{m} {results[m][str(p)][-1]:.3f}" for m in (*MODELS, LINEAR))
                  + f" ({time.time() - started:.0f}s)", flush=True)
    write_outputs(results, args, counts, time.time() - started)
    print(open(os.path.join(RESULTS, f"{args.name}.md")).read())
    return results


if __name__ == "__main__":
    main()
