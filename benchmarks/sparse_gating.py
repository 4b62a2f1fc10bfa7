"""Does sparse top-k gating save time on this CPU? Dense experts vs top-k dispatch, E = 8, 16, 32.

Three forward passes of one MMoE-style mixture (one gate, ``batch`` examples, experts of one
``units``-wide ReLU layer), each compiled with ``tf.function``:

* ``dense``: every expert on every example in one stacked product (an einsum here; the model's
  ``mmoe.layers.ExpertBank`` computes the same with one wide matmul for one-layer experts, which
  ``benchmarks/train.py`` measured faster than the einsum);
* ``top_k_masked``: the same, with all but the k largest gate weights zeroed (``gate_top_k`` in the
  spec): the same compute, a different mixture;
* ``top_k_dispatch``: each example is sent only to its k experts: per expert, gather the examples
  routed to it, one matmul on them, scatter the weighted result back (k/E of the dense FLOPs).

    .venv/bin/python benchmarks/sparse_gating.py [--batch 1024] [--dim 128] [--units 128] [--k 2]

Writes benchmarks/results/sparse_gating.json with milliseconds per batch (median of repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_functions(num_experts: int, dim: int, units: int, k: int):
    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(scale=dim**-0.5, size=(num_experts, dim, units)), tf.float32)
    gate = tf.constant(rng.normal(size=(dim, num_experts)), tf.float32)

    def top_k_weights(x):
        logits = x @ gate
        values, indices = tf.math.top_k(logits, k)  # (batch, k)
        return tf.nn.softmax(values, axis=-1), indices

    @tf.function(jit_compile=False)
    def dense(x):
        weights = tf.nn.softmax(x @ gate, axis=-1)  # (batch, E)
        experts = tf.nn.relu(tf.einsum("bd,edu->beu", x, kernel))  # (batch, E, units)
        return tf.einsum("be,beu->bu", weights, experts)

    @tf.function(jit_compile=False)
    def top_k_masked(x):
        values, indices = top_k_weights(x)
        weights = tf.reduce_sum(tf.one_hot(indices, num_experts) * values[..., None], axis=1)  # (batch, E)
        experts = tf.nn.relu(tf.einsum("bd,edu->beu", x, kernel))
        return tf.einsum("be,beu->bu", weights, experts)

    @tf.function(jit_compile=False)
    def top_k_dispatch(x):
        values, indices = top_k_weights(x)  # (batch, k)
        output = tf.zeros((tf.shape(x)[0], units))
        for expert in range(num_experts):
            routed = tf.where(tf.equal(indices, expert))  # (n_e, 2): example, slot
            rows = routed[:, 0]
            weight = tf.gather_nd(values, routed)[:, None]  # (n_e, 1)
            hidden = tf.nn.relu(tf.gather(x, rows) @ kernel[expert])  # (n_e, units)
            output = tf.tensor_scatter_nd_add(output, rows[:, None], weight * hidden)
        return output

    return {"dense": dense, "top_k_masked": top_k_masked, "top_k_dispatch": top_k_dispatch}


def time_ms(function, x, repeats: int) -> float:
    function(x)  # trace
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(x).numpy()
        samples.append((time.perf_counter() - start) * 1000)
    return float(np.median(samples))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    x = tf.constant(np.random.default_rng(1).normal(size=(args.batch, args.dim)), tf.float32)
    results = {"config": vars(args), "ms_per_batch": {}}
    for num_experts in args.experts:
        functions = make_functions(num_experts, args.dim, args.units, args.k)
        row = {name: time_ms(f, x, args.repeats) for name, f in functions.items()}
        row["dispatch_speedup_vs_dense"] = row["dense"] / row["top_k_dispatch"]
        results["ms_per_batch"][str(num_experts)] = row
        print(f"E={num_experts}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "sparse_gating.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
