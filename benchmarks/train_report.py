"""benchmarks/results/train.md: the training benchmark's result as a page a person reads."""

from __future__ import annotations

from machine import MATMUL_REPEATS


def markdown(result: dict) -> str:
    """benchmarks/results/train.md: the summary, every configuration, the profile."""
    h, machine = result, result["machine"]
    lines = [
        "# Training speed at the reference size",
        "",
        f"{h['reference']}. Step: {h['step_source']}. Machine: {machine['cpus']} CPUs; float32 numpy "
        f"2048x2048 matmul: median product {h['matmul_gflops']} GFLOP/s over the headline rounds ({MATMUL_REPEATS} products after "
        f"each round), fastest {h['matmul_gflops_fastest']} (of {MATMUL_REPEATS * (len(machine['numpy_matmul_gflops']) + len(machine['numpy_matmul_gflops_headline']))} "
        f"products in this run); TensorFlow's own matmul: median product {h['tf_matmul_gflops_median']}, "
        f"fastest {h['tf_matmul_gflops']} GFLOP/s. {_cpu_line(machine['cpu'])} "
        f"Training FLOPs per example: {h['train_flops_per_example']:,} ({h['flops']['formula']}).",
        "",
        f"- default ({h['default_config']}): **{h['fused_examples_per_s']:,.0f} examples/s**, roofline fraction "
        f"**{h['roofline_fraction']}** (median step rate / median matmul rate of the same rounds; "
        f"{h['roofline_fraction_vs_fastest_matmul']} against the fastest product of the run, which sets a typical step "
        f"against the least disturbed product), peak RSS {h['peak_rss_mb']:,.0f} MB",
        f"- the same step against TensorFlow's own 2048x2048 product (median {h['tf_matmul_gflops_median']} GFLOP/s, "
        f"same rounds): {h['roofline_fraction_vs_tf_matmul']}",
        f"- naive experts, same settings: {h['naive_examples_per_s']:,.0f} examples/s (fused / naive = {h['fused_over_naive']}; "
        f"paired by round, median {h['fused_over_naive_paired']}, fused faster in {h['fused_faster_rounds']} of "
        f"{len(h['headline_configs'][0]['examples_per_s_by_round'])} rounds)",
        f"- in the least disturbed round: fused {h['fused_examples_per_s_best_round']:,.0f}, naive "
        f"{h['naive_examples_per_s_best_round']:,.0f} examples/s; roofline fraction {h['roofline_fraction_best_round']} "
        "of the fastest product",
        (f"- {h['steps_per_execution']} steps per call of the training loop (training.steps_per_execution) against one: "
         f"{h['steps_per_call_gain']}x ({h['one_step_per_call_examples_per_s']:,.0f} examples/s at one step per call, "
         "cached input" + "".join(f"; at batch {b}: {g}x" for b, g in h.get("steps_per_call_gain_by_batch", {}).items())
         + ")" if h["one_step_per_call_examples_per_s"] else "- one step per call of the training loop"),
        f"- fastest: {h['best_config']}: {h['best_examples_per_s']:,.0f} examples/s (roofline {h['best_roofline_fraction']})",
        "- input alone, no training (examples/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in h["input_alone_examples_per_s"].items()),
        input_wait_line(h["input_wait"]),
        "",
        f"Headline comparison, timed first, while the process held only the two variants it compares "
        f"({h['settings']['headline_rounds']} interleaved rounds x {h['settings']['headline_steps']} steps; "
        f"the default also on the other inputs, for the input-wait figures above; median matmul "
        f"{h['matmul_gflops']} GFLOP/s):",
        "",
        *_table(h["headline_configs"]),
        "",
        f"Every configuration, timed after all were built ({h['settings']['rounds']} interleaved rounds x "
        f"{h['settings']['steps']} steps; the process then holds every variant's model and every input; median "
        f"matmul {h['configs'][0]['matmul_gflops'] if h['configs'] else '-'} GFLOP/s):",
        "",
        *_table(h["configs"]),
        "",
        "Profile of the default step on one in-memory batch (median ms): "
        + ", ".join(f"{k} {v}" for k, v in h["profile"].items()) + ".",
        "",
        (f"Op time per step of the {h['op_profile']['step']} step by op type (TensorFlow profiler, all threads, "
         "ms and share; graph mode, since XLA runs the gradient as one cluster): "
         + ", ".join(f"{k} {v[0]} ({v[1]:.0%})" for k, v in h["op_profile"].get("ops", {}).items()) + "."),
        "",
        "Expert bank alone, forward + backward, graph mode (median ms): " + "; ".join(
            f"{name} ({_bank_size(h['expert_bank_alone']['sizes'][name])}): fused {v['fused_ms']}, naive "
            f"{v['naive_ms']} (naive / fused = {v['naive_over_fused']})"
            for name, v in h["expert_bank_alone"].items() if name != "sizes"
        ) + ".",
        "",
        "Configurations were timed in interleaved rounds, in a new random order each round, after warm-up; "
        "medians of per-step times (a call of several steps counts as that many steps of its mean time). "
        "Peak RSS per variant is cumulative (variants built earlier stay in memory); the default is built first. "
        f"Total run {h['wall_s']} s.",
        "",
    ]
    return "\n".join(lines)


def _table(rows: list) -> list[str]:
    lines = [
        "| experts | jit_compile | input | batch | steps per call | median step ms | examples/s | GFLOP/s | roofline "
        "| roofline vs fastest matmul | best round examples/s | roofline, best round | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rss = "" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:,.0f}"
        lines.append(
            f"| {row['experts']} | {row['jit_compile']} | {row['input']} | {row['batch']} | {row['steps_per_execution']} | "
            f"{row['median_step_ms']} | {row['examples_per_s']:,.0f} | {row['achieved_gflops']} | "
            f"{row['roofline_fraction']} | {row['roofline_fraction_vs_fastest_matmul']} | "
            f"{row['examples_per_s_best_round']:,.0f} | {row['roofline_fraction_best_round']} | {rss} |"
        )
    return lines


def _cpu_line(cpu: dict) -> str:
    """One sentence on :func:`describe_cpu`: why numpy's and TensorFlow's products can differ."""
    features = ", ".join(cpu["features"] or []) or "unknown"
    return (f"CPU: {cpu['model'] or 'unknown'} ({features}); numpy's OpenBLAS runs its "
            f"{cpu['openblas_core'] or 'unknown'} kernels, TensorFlow {cpu['tensorflow']} its own (oneDNN: {cpu['onednn']}).")


def _bank_size(size: dict) -> str:
    widths = " -> ".join(str(w) for w in [size["input_width"], *size["units"]])
    return f"batch {size['batch']}, {size['experts']} experts {widths}"


def input_wait_line(wait: dict) -> str:
    """One sentence on :func:`input_wait`, saying what the ratios show."""
    cached = "does not wait on input" if wait["cached_over_memory"] >= 0.95 else "waits on input"
    return (
        f"- with the default cached input the step {cached}: {wait['cached_examples_per_s']:,.0f} examples/s against "
        f"{wait['memory_examples_per_s']:,.0f} from one batch in memory (ratio {wait['cached_over_memory']}). Reading, "
        f"parsing and preprocessing every batch from TFRecords (training.cache off, or a first epoch) runs "
        f"{wait['tfrecord_examples_per_s']:,.0f} (ratio {wait['tfrecord_over_memory']}): input alone is "
        f"{wait['input_alone_over_step']}x the step's rate, but on this machine it shares the CPU cores with the step"
    )
