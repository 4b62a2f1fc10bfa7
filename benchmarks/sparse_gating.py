"""Sparse gating: the model's own MMoE layer, dense against top-k dispatch and DSelect-k, as E grows.

Speed (the default): one training step (forward, backward and an Adam update of the layer's
weights) of ``mmoe.layers.MMoE`` with two task gates at the reference expert size (issue 7,
``feature_specs/train_reference.yaml``: 132 inputs, experts 256 -> 128, batch 1024), for
E = 8, 16, 32, 64, 128:

* ``dense``: softmax gates, every expert computed for every row (the fused ``ExpertBank``);
* ``top_k``: ``gate_top_k`` = k in {1, 2}: each row dispatched to its k experts per task gate
  (``mmoe.layers.dispatch``, training capacity ``--capacity-factor``);
* ``dselect_k``: DSelect-k gates with k selectors, trained dense as in the paper.

The update is the model's own optimizer (:class:`mmoe.optimizers.LazyAdam`, what ``mmoe train``
uses: TensorFlow's fused Adam kernel for these dense weights). Keras' unfused Adam made the update
of 128 experts' 8.5M weights cost as much as their forward and backward passes together.

Each configuration's step is a ``tf.function`` (``--jit-compile`` for XLA); the configurations
are timed in turns, round after round, so a load change on the machine hits them alike; the
median of the rounds is reported. The forward pass alone (inference: top-k and DSelect-k
dispatched, nothing dropped) is timed the same way.

    .venv/bin/python benchmarks/sparse_gating.py                      # speed
    .venv/bin/python benchmarks/sparse_gating.py --experts 8 32 --rounds 3   # a quick look

Writes benchmarks/results/sparse_gating.json (``{"train_step_ms": {"dense": {"<E>": ms}, "top_k":
{"<k>": {"<E>": ms}}, "dselect_k": {"<k>": {"<E>": ms}}}, "forward_ms": {...}, ...}``) and
sparse_gating.png. Quality at the same budget: ``benchmarks/sparse_gating_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine import describe_cpu  # noqa: E402
from mmoe.layers import MMoE  # noqa: E402
from mmoe.optimizers import LazyAdam  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
TASKS = ("click", "engagement")


def make_layer(kind: str, num_experts: int, k: int, args) -> MMoE:
    options = {"dense": {}, "top_k": {"gate_top_k": k}, "dselect_k": {"gate_top_k": k, "gate_type": "dselect_k"}}[kind]
    keras.utils.set_random_seed(0)
    layer = MMoE(list(TASKS), num_experts=num_experts, expert_units=args.units,
                 capacity_factor=args.capacity_factor, dselect_entropy_weight=0.01, **options)
    layer.build((None, args.dim))
    return layer


def make_steps(layer: MMoE, args):
    """``(train_step, forward)`` compiled functions of ``layer``."""
    optimizer = LazyAdam(learning_rate=1e-3)
    optimizer.build(layer.trainable_variables)
    rng = np.random.default_rng(1)
    targets = {t: tf.constant(rng.normal(size=(args.batch, args.units[-1])), tf.float32) for t in TASKS}

    def train_step(x):
        with tf.GradientTape() as tape:
            mixtures, _ = layer(x, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(mixtures[t] - targets[t])) for t in TASKS])
            if layer.losses:
                loss += tf.add_n(layer.losses)
        variables = layer.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def forward(x):
        mixtures, _ = layer(x, training=False)
        return mixtures["click"]

    return (tf.function(train_step, jit_compile=args.jit_compile), tf.function(forward, jit_compile=False))


def configurations(args) -> list[tuple[str, str, int, int]]:
    """``(kind, key, k, E)``: dense (k unused), top-k and DSelect-k for each k, at every E."""
    configs = [("dense", "dense", 0, e) for e in args.experts]
    for kind in ("top_k", "dselect_k"):
        configs += [(kind, str(k), k, e) for k in args.k for e in args.experts if k < e]
    return configs


def time_all(args) -> dict:
    x = tf.constant(np.random.default_rng(2).normal(size=(args.batch, args.dim)), tf.float32)
    functions = {}
    for config in configurations(args):
        kind, _, k, experts = config
        train_step, forward = make_steps(make_layer(kind, experts, k, args), args)
        train_step(x).numpy(), forward(x).numpy()  # trace and compile
        functions[config] = (train_step, forward)
        print(f"compiled {kind} k={k} E={experts}", flush=True)
    samples = {config: ([], []) for config in functions}
    for round_ in range(args.rounds):
        for config, fns in functions.items():
            for fn, out in zip(fns, samples[config]):
                start = time.perf_counter()
                fn(x).numpy()
                out.append((time.perf_counter() - start) * 1000)
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
    results = {"train_step_ms": {}, "forward_ms": {}}
    for (kind, key, _, experts), (train, forward) in samples.items():
        for name, values in (("train_step_ms", train), ("forward_ms", forward)):
            table = results[name].setdefault(kind, {})
            (table if kind == "dense" else table.setdefault(key, {}))[str(experts)] = float(np.median(values))
    return results


def ratios(results: dict, args) -> dict:
    """Dense step / top-k step at each E, and each top-k step / the E = 8 dense step."""
    train = results["train_step_ms"]
    dense = train["dense"]
    base = dense.get("8")
    out = {}
    for k, row in train.get("top_k", {}).items():
        out[k] = {
            e: {"speedup_vs_dense": dense[e] / ms, **({"vs_dense_e8": ms / base} if base else {})}
            for e, ms in row.items() if e in dense
        }
    return out


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name, title in zip(axes, ("train_step_ms", "forward_ms"), ("training step", "forward (inference)")):
        table = results[name]
        series = [("dense", table["dense"])]
        series += [(f"{kind} k={k}", row) for kind in ("top_k", "dselect_k") for k, row in table.get(kind, {}).items()]
        for label, row in series:
            experts = sorted(int(e) for e in row)
            ax.plot(experts, [row[str(e)] for e in experts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("experts E")
        ax.set_ylabel("ms per batch of 1024")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=132)
    parser.add_argument("--units", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--capacity-factor", type=float, default=1.25)
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the training step")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--name", default="sparse_gating")
    args = parser.parse_args(argv)
    started = time.time()
    results = time_all(args)
    results["ratios"] = ratios(results, args)
    results["config"] = {**vars(args), "tasks": len(TASKS), "seconds": round(time.time() - started, 1)}
    results["machine"] = describe_cpu()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.name}.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    plot(results, os.path.join(RESULTS, f"{args.name}.png"))
    print(json.dumps({"train_step_ms": results["train_step_ms"], "ratios": results["ratios"]}, indent=1))
    return results


if __name__ == "__main__":
    main()
