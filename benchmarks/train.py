"""Training speed at the reference size: examples/s, FLOPs, roofline fraction and peak memory.

The reference size (issue 7, ``feature_specs/train_reference.yaml``): 8 categorical features with
16-dim embeddings and 4 numeric features (132 encoded inputs); 8 experts, each an MLP 256 -> 128;
towers of 64; batch 1024; click (binary) + engagement (regression, masked by click).

1. Generates ``--rows`` seeded rows (Parquet) and runs the project's Beam preprocessing
   (``pipelines.run.preprocess``) into ``<workdir>`` (a temp dir unless ``--workdir``), in a child
   process so its memory does not count towards training's.
2. Measures the machine: float32 numpy 2048x2048 matmul GFLOP/s (and TensorFlow's own) before
   and after every timing round. The roofline fraction compares like with like: the median step
   rate against the median product rate of the same rounds (the machine is shared, and its
   matmul rate moves by 20% within a run); it is also given against the fastest product of the
   whole run, and for each configuration's least disturbed round. The CPU, its vector extensions
   and the kernel set OpenBLAS picked are recorded (``machine.cpu``): on AVX-512 CPUs numpy's
   OpenBLAS may run AVX2 kernels while TensorFlow's products use AVX-512, so the step is also
   compared with TensorFlow's own product (``roofline_fraction_vs_tf_matmul``).
3. Builds one training step per configuration: experts fused (stacked kernels) or naive (a loop
   of Dense layers) x ``jit_compile`` off/on, each fed from three inputs: ``tfrecord`` (the
   project's tf.data pipeline with ``training.cache`` off: gzip TFRecords -> shuffle -> batch ->
   parse -> preprocessing layers, prefetched, every batch), ``cached`` (the same pipeline with
   ``training.cache`` on, as ``mmoe train`` runs it: the preprocessed batches kept in memory after
   a warm epoch, their order reshuffled each epoch) and ``memory`` (one batch held in memory: the
   model alone, so input can never be the bottleneck);
   plus the spec's own variant at other batch sizes on cached input. The steps are the
   project's ``mmoe.loop.Trainer``'s, as ``mmoe train`` runs them: ``training.steps_per_execution``
   steps per call of its compiled loop (``Trainer.train_steps``); the spec's variant on cached
   input is also timed at one step per call (``Trainer.train_step``).
4. Times them in interleaved rounds, in a new random order each round (the machine is shared:
   every configuration sees the same background load), after warm-up; reports medians of
   per-step times, and each configuration's least disturbed round.
5. Profiles the default step: forward, forward + backward, the step, op time by op type
   (TensorFlow profiler), and the expert bank alone, fused vs naive, at two sizes.

    .venv/bin/python benchmarks/train.py            # ~2 min on 2 AVX-512 cores (4 min on older ones)
    .venv/bin/python benchmarks/train.py --quick    # a smoke run, under a minute

Writes benchmarks/results/train.json (``fused_examples_per_s``, ``naive_examples_per_s``,
``train_flops_per_example``, ``matmul_gflops``, ``roofline_fraction``, ``peak_rss_mb``, and every
configuration) and benchmarks/results/train.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace

from machine import describe_cpu, median, numpy_matmul_gflops, peak_rss_mb, reset_peak_rss, tf_matmul_gflops
from train_profile import EXPERT_SIZES, expert_banks, op_profile, profile
from train_report import markdown

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SPEC_NAME = "train_reference"
INPUTS = ("tfrecord", "cached", "memory")
FLOPS_FORMULA = (
    "train = 3 * forward (backward = 2 * forward: input and weight gradients); forward = "
    "sum over matmuls of 2*m*n*k per example (m = 1): experts E * sum_i 2*d_i*d_(i+1) with "
    "d_0 = encoded input width; gates T * 2*d_0*E; mixtures T * 2*E*u_last; towers "
    "T * sum_j 2*t_j*t_(j+1) from u_last to 1; embeddings, biases, activations, losses and the "
    "optimizer not counted"
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- data


def generate_rows(rows: int, seed: int):
    """A seeded impression log with the reference spec's columns (pandas DataFrame)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)

    def ids(prefix, cardinality):  # Zipf-like popularity over `cardinality` ids
        return np.char.add(prefix, (rng.zipf(1.3, rows) % cardinality).astype(str))

    frame = pd.DataFrame({
        "request_id": np.char.add("r", (np.arange(rows) // 10).astype(str)),
        "user_id": ids("u", 4000), "item_id": ids("i", 4000), "category": ids("c", 800),
        "brand": ids("b", 600), "city": ids("t", 300), "device": ids("d", 20),
        "hour": rng.integers(0, 24, rows), "weekday": rng.integers(0, 7, rows),
        "user_age": rng.normal(35, 10, rows).clip(16, 90), "price": rng.lognormal(3, 1, rows),
        "popularity": rng.pareto(2.0, rows) * 100, "freshness_days": rng.exponential(30, rows),
    })
    logit = -1.5 + 0.4 * np.log1p(frame["popularity"]) - 0.2 * np.log1p(frame["price"]) + rng.normal(0, 1, rows)
    frame["clicked"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["dwell_seconds"] = np.where(frame["clicked"] == 1, rng.lognormal(3, 1, rows), 0.0)
    return frame


def prepare(workdir: str, rows: int, seed: int) -> dict:
    """Writes raw Parquet under ``workdir/raw`` and preprocesses it into ``workdir``."""
    from feature_specs.spec_reader import bundled_spec_path
    from pipelines.run import preprocess

    raw = os.path.join(workdir, "raw")
    os.makedirs(raw, exist_ok=True)
    start = time.perf_counter()
    generate_rows(rows, seed).to_parquet(os.path.join(raw, "rows-00000.parquet"), index=False)
    generated = time.perf_counter()
    report = preprocess(bundled_spec_path(SPEC_NAME), os.path.join(raw, "*.parquet"), workdir)
    return {"rows": rows, "generate_s": round(generated - start, 2),
            "preprocess_s": round(time.perf_counter() - generated, 2), "written": report["written"]}


def prepare_in_child(workdir: str, rows: int, seed: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--prepare", workdir, "--rows", str(rows), "--seed", str(seed)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(next(line[7:] for line in output.splitlines() if line.startswith("RESULT ")))


# ---------------------------------------------------------------- FLOPs


def train_flops_per_example(spec) -> dict:
    """Training FLOPs per example of ``spec``'s gated model (see ``FLOPS_FORMULA``)."""
    config = spec.model
    width = sum(f.embedding_dim if f.is_categorical else 1 for f in spec.model_features)
    tasks, experts = len(spec.tasks), config.num_experts
    dims = [width, *config.expert_units]
    tower = [dims[-1], *config.tower_units, 1]
    forward = {
        "experts": experts * sum(2 * a * b for a, b in zip(dims, dims[1:])),
        "gates": tasks * 2 * width * experts,
        "mixtures": tasks * 2 * experts * dims[-1],
        "towers": tasks * sum(2 * a * b for a, b in zip(tower, tower[1:])),
    }
    total = sum(forward.values())
    return {"input_width": width, "forward": forward, "forward_total": total, "train": 3 * total}


# ---------------------------------------------------------------- steps and inputs


@dataclass
class Config:
    """One measured configuration (expert form, XLA, input, batch size), its step and input."""

    experts: str  # "fused" | "naive"
    jit: bool
    input: str  # one of INPUTS
    batch: int
    per_call: int  # optimizer steps per call of the trainer's loop (training.steps_per_execution)
    step: object = field(repr=False, default=None)
    iterator: object = field(repr=False, default=None)
    times: list = field(default_factory=list)
    round_times: list = field(default_factory=list)  # one list of step seconds per round

    def variant(self, **changes) -> "Config":
        """The same step with ``changes`` (e.g. another input), with fresh timings."""
        return replace(self, times=[], round_times=[], **changes)

    def one_step_per_call(self) -> "Config":
        """The same step and input, timed at one step per call (fresh timings)."""
        return self.variant(per_call=1)

    @property
    def key(self) -> str:
        return config_key({"experts": self.experts, "jit_compile": self.jit, "input": self.input, "batch": self.batch,
                           "steps_per_execution": self.per_call})


def variant_spec(spec, fused: bool, jit: bool, batch: int):
    return replace(spec, model=replace(spec.model, fused_experts=fused),
                   training=replace(spec.training, jit_compile=jit, batch_size=batch))


class Step:
    """One compiled training step of ``spec`` (its ``fused_experts``, ``jit_compile``, batch size).

    ``self(batch)`` runs one ``mmoe.loop.Trainer.train_step`` on a batch of :meth:`dataset` and
    returns the loss; :meth:`run` runs several steps in one call of the trainer's loop
    (``Trainer.train_steps``), as ``mmoe train`` does.
    """

    def __init__(self, spec, workdir):
        import keras

        from mmoe.loop import Trainer

        keras.utils.set_random_seed(spec.training.seed)
        self.spec, self.workdir = spec, workdir
        self.trainer = Trainer(spec, workdir)
        self.models = self.trainer.models
        self.model = self.models.core

    def loss_of(self, features, labels, sample_weights):
        """Weighted task losses of the core model, as Keras' ``compile`` would combine them."""
        import tensorflow as tf

        from mmoe.model import task_losses

        losses, weights = task_losses(self.spec)
        outputs = self.model(features, training=True)  # task -> (batch, 1)
        return tf.add_n([weights[t] * losses[t](labels[t], outputs[t], sample_weight=sample_weights[t]) for t in losses])

    def whole_step(self):
        """GradientTape + Adam over ``models.core``, the whole step compiled as one function
        (the profile's comparison with the trainer's two compiled clusters)."""
        import tensorflow as tf

        from mmoe.optimizers import make_optimizer

        optimizer = make_optimizer(self.spec.training)
        variables = self.model.trainable_variables
        optimizer.build(variables)

        @tf.function(jit_compile=self.spec.training.jit_compile)
        def step(batch):
            with tf.GradientTape() as tape:
                loss = self.loss_of(*batch)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        return step

    def __call__(self, batch) -> float:
        return self.trainer.train_step(batch)["loss"]

    def run(self, iterator, steps: int) -> int:
        """``steps`` optimizer steps on batches of ``iterator`` in one call; returns the steps run."""
        return self.trainer.train_steps(iterator, steps)[0]

    def dataset(self, cache: bool):
        """Preprocessed ``(features, labels, sample_weights)`` train batches, one epoch.

        ``cache``: the batches are kept in memory once a first epoch has been read (the
        trainer's ``training.cache``); otherwise every batch is read, parsed and preprocessed.
        """
        return self.trainer.dataset("train", cache=cache)


def make_inputs(step: Step, log_progress: bool = True) -> dict:
    """Iterators of ``step``'s preprocessed full batches: ``tfrecord``, ``cached`` and ``memory``."""
    import tensorflow as tf

    batch, first_task = step.spec.training.batch_size, step.spec.tasks[0].name

    def full_batches(cache: bool):
        # the last batch of an epoch is smaller: drop it, so every step has one shape (no retracing)
        return step.dataset(cache).filter(lambda f, l, w: tf.shape(l[first_task])[0] == batch)

    tfrecord, cached = full_batches(False), full_batches(True)
    start, batches = time.perf_counter(), 0
    for _ in cached:  # the warm epoch fills the cache
        batches += 1
    if log_progress:
        log(f"cached {batches} batches of {batch} in {time.perf_counter() - start:.1f} s")
    one = next(iter(cached))
    return {
        "tfrecord": iter(tfrecord.repeat().prefetch(tf.data.AUTOTUNE)),
        "cached": iter(cached.repeat().prefetch(tf.data.AUTOTUNE)),
        "memory": iter(tf.data.Dataset.from_tensors(one).repeat()),  # the same batch, held in memory
        "memory_batch": one,
        "batches_per_epoch": batches,
    }


def input_rate(iterator, batches: int) -> float:
    """Batches/s of an input iterator alone (no training step)."""
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def run_steps(step, iterator, count: int, per_call: int) -> list[float]:
    """Runs ``count`` steps, up to ``per_call`` in one call of the trainer's loop (1: one
    ``train_step`` per call); returns seconds per step, one value per step (each call's time
    divided by its steps; input fetch included, losses read back)."""
    times = []
    while count > 0:
        steps = min(per_call, count)
        start = time.perf_counter()
        if per_call == 1:
            step(next(iterator))
        else:
            step.run(iterator, steps)
        times += [(time.perf_counter() - start) / steps] * steps
        count -= steps
    return times


# ---------------------------------------------------------------- measurement


def summarize(config: Config, flops: int, matmul: float, fastest_matmul: float) -> dict:
    """One table row.

    Args:
        config: a timed configuration.
        flops: training FLOPs per example.
        matmul: the median numpy product rate (GFLOP/s) of the rounds ``config`` was timed in.
        fastest_matmul: the fastest numpy product of the whole run.

    ``roofline_fraction`` divides the median step's rate by ``matmul``: both sides medians,
    measured in the same rounds under the same background load.
    ``roofline_fraction_vs_fastest_matmul`` divides the same rate by ``fastest_matmul`` (a typical
    step against the least disturbed product: the lower bound). ``*_best_round``: the round with
    the highest rate (the least disturbed) against ``fastest_matmul``.
    """
    step_s = median(config.times)
    rate = config.batch / step_s
    gflops = rate * flops / 1e9
    round_rates = [config.batch / median(t) for t in config.round_times]
    return {
        "experts": config.experts, "jit_compile": config.jit, "input": config.input, "batch": config.batch,
        "steps_per_execution": config.per_call, "steps_timed": len(config.times), "median_step_ms": round(step_s * 1e3, 2),
        "examples_per_s": round(rate, 1), "achieved_gflops": round(gflops, 2),
        "matmul_gflops": round(matmul, 1),
        "roofline_fraction": round(gflops / matmul, 3),
        "roofline_fraction_vs_fastest_matmul": round(gflops / fastest_matmul, 3),
        "examples_per_s_best_round": round(max(round_rates), 1),
        "roofline_fraction_best_round": round(max(round_rates) * flops / 1e9 / fastest_matmul, 3),
        "examples_per_s_by_round": [round(r) for r in round_rates],
    }


# ---------------------------------------------------------------- the run


def variant_order(spec) -> list[tuple[bool, bool]]:
    """``(fused, jit)`` variants: the spec's own, then naive (or fused) experts with the same
    ``jit_compile`` (the headline pair), then the rest."""
    fused, jit = spec.model.fused_experts, spec.training.jit_compile
    pair = [(fused, jit), (not fused, jit)]
    return pair + [(f, j) for f in (True, False) for j in (False, True) if (f, j) not in pair]


def setup_variants(spec, workdir, batch: int, warmup: int, variants: list, inputs: dict | None = None,
                   ) -> tuple[list, dict, dict, dict]:
    """Builds and warms up the ``(fused, jit)`` ``variants`` at ``batch``, each on every input.

    Every variant runs ``training.steps_per_execution`` steps per call, as ``mmoe train`` does.
    ``inputs``: the shared input iterators (made from the first variant when None).

    Returns ``(configs, steps, inputs, memory)``: one :class:`Config` per variant and input,
    steps by ``(experts, jit)``, the shared input iterators, and each variant's peak RSS in MB
    (cumulative: variants built earlier stay in memory, so only the first is a clean figure).
    """
    per_call = spec.training.steps_per_execution
    configs, steps, memory = [], {}, {}
    for fused, jit in variants:
        reset_peak_rss()
        start = time.perf_counter()
        step = Step(variant_spec(spec, fused, jit, batch), workdir)
        if inputs is None:
            inputs = make_inputs(step)
        for kind in INPUTS:
            run_steps(step, inputs[kind], warmup, per_call)
        name = ("fused" if fused else "naive", jit)
        steps[name] = step
        memory[name] = round(peak_rss_mb(), 1)
        configs += [Config(name[0], jit, kind, batch, per_call, step, inputs[kind]) for kind in INPUTS]
        log(f"built + warmed {name[0]:5s} jit={jit!s:5s} in {time.perf_counter() - start:5.1f} s, "
            f"peak RSS {memory[name]:,.0f} MB")
    return configs, steps, inputs, memory


def headline_configs(spec, steps: dict, inputs: dict, batch: int) -> list[Config]:
    """The issue's headline comparison, on the input ``mmoe train`` runs (cached when
    ``training.cache`` is on): the spec's variant, the other expert form, and the spec's variant
    at one step per call; and the spec's variant on the other inputs (does the step wait on
    input?), timed here too, where the process holds only these iterators' models."""
    per_call, jit = spec.training.steps_per_execution, spec.training.jit_compile
    kind = "cached" if spec.training.cache else "tfrecord"
    own = "fused" if spec.model.fused_experts else "naive"
    configs = [Config(experts, jit, kind, batch, per_call, steps[(experts, jit)], inputs[kind])
               for experts in (own, "naive" if own == "fused" else "fused")]
    if per_call > 1:
        configs.append(configs[0].one_step_per_call())
    configs += [configs[0].variant(input=other, iterator=inputs[other]) for other in INPUTS if other != kind]
    return configs


def setup_sweep(spec, workdir, sizes: list[int], warmup: int, single_below: int) -> list[Config]:
    """The spec's variant at other batch sizes (a fresh model each), on cached input; sizes
    below ``single_below`` also at one step per call (the shorter the step, the larger the
    share of per-call host work)."""
    configs = []
    experts = "fused" if spec.model.fused_experts else "naive"
    for size in sizes:
        step = Step(variant_spec(spec, spec.model.fused_experts, spec.training.jit_compile, size), workdir)
        inputs = make_inputs(step, log_progress=False)
        if inputs["batches_per_epoch"] == 0:
            log(f"batch {size}: fewer train rows than one batch, skipped")
            continue
        per_call = spec.training.steps_per_execution
        run_steps(step, inputs["cached"], warmup, per_call)
        configs.append(Config(experts, spec.training.jit_compile, "cached", size, per_call, step, inputs["cached"]))
        if size < single_below and per_call > 1:
            configs.append(configs[-1].one_step_per_call())
        log(f"built + warmed batch {size}")
    return configs


def time_interleaved(configs: list[Config], rounds: int, per_block: int, block_warmup: int, machine: dict) -> None:
    """Rounds over every configuration in a new random order each round (so background load and
    order effects fall on all alike); each block runs ``block_warmup`` untimed steps, then
    ``per_block`` timed ones. The matmul rates are measured again after each round."""
    import random

    for r in range(rounds):
        order = list(configs)
        random.Random(r).shuffle(order)
        for config in order:
            run_steps(config.step, config.iterator, block_warmup, config.per_call)
            config.round_times.append(run_steps(config.step, config.iterator, per_block, config.per_call))
            config.times += config.round_times[-1]
        fastest, middle = numpy_matmul_gflops()
        machine["numpy"].append(fastest)
        machine["numpy_median"].append(middle)
        fastest, middle = tf_matmul_gflops()
        machine["tf"].append(fastest)
        machine["tf_median"].append(middle)
        log(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{c.experts[0]}{'X' if c.jit else 'G'}-{c.input[:3]}-{c.batch}x{c.per_call} {c.batch / median(c.times):,.0f}"
            for c in configs
        ) + f" ex/s; matmul numpy {machine['numpy'][-1]:.0f}, TF {machine['tf'][-1]:.0f} GFLOP/s")


def headline(head: dict, rows: dict, default: tuple, flops: int, fastest_matmul: float, memory: dict, batch: int,
             input_kind: str, per_call: int) -> dict:
    """The issue's summary figures, from the ``head`` rows (the headline phase): the default
    configuration (the spec's settings: XLA or not, ``cached`` input when ``training.cache`` is
    on, else ``tfrecord``, and its steps per call) against naive experts and one step per call;
    the fastest of every configuration (``rows``)."""
    def key(experts: str, steps: int) -> str:
        return config_key({"experts": experts, "jit_compile": default[1], "input": input_kind, "batch": batch,
                           "steps_per_execution": steps})

    fused, naive, single = head[key("fused", per_call)], head[key("naive", per_call)], head.get(key("fused", 1))
    by_round = list(zip(fused["examples_per_s_by_round"], naive["examples_per_s_by_round"]))  # paired rounds
    best = max(rows.values(), key=lambda r: r["examples_per_s"])
    return {
        "fused_examples_per_s": fused["examples_per_s"],
        "naive_examples_per_s": naive["examples_per_s"],
        "fused_over_naive": round(fused["examples_per_s"] / naive["examples_per_s"], 3),
        # the same comparison paired by round (both timed in every round, in random order)
        "fused_over_naive_paired": round(median([f / n for f, n in by_round]), 3),
        "fused_faster_rounds": sum(f > n for f, n in by_round),
        "train_flops_per_example": flops,
        "matmul_gflops": fused["matmul_gflops"],
        "matmul_gflops_fastest": round(fastest_matmul, 1),
        "roofline_fraction": fused["roofline_fraction"],
        "roofline_fraction_vs_fastest_matmul": fused["roofline_fraction_vs_fastest_matmul"],
        "fused_examples_per_s_best_round": fused["examples_per_s_best_round"],
        "naive_examples_per_s_best_round": naive["examples_per_s_best_round"],
        "roofline_fraction_best_round": fused["roofline_fraction_best_round"],
        "peak_rss_mb": memory[("fused", default[1])],
        "default_config": key("fused", per_call),
        "steps_per_execution": per_call,
        "one_step_per_call_examples_per_s": single and single["examples_per_s"],
        "steps_per_call_gain": single and round(fused["examples_per_s"] / single["examples_per_s"], 3),
        "best_config": config_key(best),
        "best_examples_per_s": best["examples_per_s"],
        "best_roofline_fraction": best["roofline_fraction"],
    }


def input_wait(rows: dict, default_config: str, input_alone: dict) -> dict:
    """Does the step wait on input? The default step fed from the cached pipeline (``mmoe
    train``'s default after its first epoch) and from TFRecords (read, parse and preprocess in
    tf.data, every batch), each against the same step fed one batch already in memory; and
    input alone against the step's rate."""
    experts, jit, _, batch, per_call = default_config.split("/")
    rate = {kind: rows[f"{experts}/{jit}/{kind}/{batch}/{per_call}"]["examples_per_s"] for kind in INPUTS}
    return {
        **{f"{kind}_examples_per_s": rate[kind] for kind in INPUTS},
        "cached_over_memory": round(rate["cached"] / rate["memory"], 3),
        "tfrecord_over_memory": round(rate["tfrecord"] / rate["memory"], 3),
        "input_alone_over_step": round(input_alone["tfrecord"] / rate["tfrecord"], 1),
    }


def config_key(row: dict) -> str:
    """``experts/xla|graph/input/b<batch>/x<steps per call>``."""
    return (f"{row['experts']}/{'xla' if row['jit_compile'] else 'graph'}/{row['input']}/b{row['batch']}"
            f"/x{row['steps_per_execution']}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000, help="generated rows (90%% train)")
    parser.add_argument("--workdir", help="keep data here instead of a temp dir (reused if it holds data of --rows rows)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--headline_rounds", type=int, default=16,
                        help="interleaved rounds of the headline comparison (default vs naive vs one step per call, "
                             "and the default on every input)")
    parser.add_argument("--headline_steps", type=int, default=16, help="timed steps per headline configuration per round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds of every configuration")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per input after building a variant")
    parser.add_argument("--block_warmup", type=int, default=2, help="untimed steps before each timed block")
    parser.add_argument("--sweep", type=int, nargs="*", default=[256, 512, 2048, 4096])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer rows, rounds and sweep sizes")
    parser.add_argument("--output_dir", default=RESULTS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rounds, args.steps, args.sweep = min(args.rows, 12_000), 1, 4, [512]
        args.headline_rounds, args.headline_steps = 2, 8
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.prepare:
        print("RESULT " + json.dumps(prepare(args.prepare, args.rows, args.seed)), flush=True)
        return {}
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        return run(args, args.workdir or tmp, wall)


# The input iterators of the last run. TensorFlow can hang destroying a half-consumed endless
# tf.data iterator (seen here with TF 2.21, waiting on tf.data's autotune thread), so they are
# kept alive and the script exits without tearing them down.
_ITERATORS: list = []


def write_results(result: dict, args, wall: float) -> None:
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "train.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    with open(os.path.join(args.output_dir, "train.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(result))
    log(f"wrote {args.output_dir}/train.json and train.md")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))}, indent=2), flush=True)


def prepare_data(args, root: str) -> dict:
    report = os.path.join(root, "report.json")
    if os.path.exists(report):
        with open(report, encoding="utf-8") as handle:
            rows = json.load(handle)["input_rows"]
        if rows != args.rows:  # e.g. a --quick run's data: its results would not be the reference run's
            raise SystemExit(f"{root} holds {rows:,} generated rows, not the {args.rows:,} asked for: "
                             f"pass --rows {rows} or another --workdir")
        log(f"reusing the preprocessed data in {root} ({rows:,} rows)")
        return {"reused": root, "rows": rows}
    log(f"generating {args.rows:,} rows and preprocessing them (Beam) into {root}")
    data = prepare_in_child(root, args.rows, args.seed)
    log(f"data ready: generate {data['generate_s']} s, preprocess {data['preprocess_s']} s")
    return data


def run(args, root: str, wall: float) -> dict:
    """Measures everything and writes the results (before the input iterators are torn down)."""
    from feature_specs.artifacts import Workdir
    from feature_specs.spec_reader import bundled_spec_path, load_spec

    spec = load_spec(bundled_spec_path(SPEC_NAME))
    workdir = Workdir(root)
    data = prepare_data(args, root)
    flops = train_flops_per_example(spec)
    machine = {"numpy": [numpy_matmul_gflops()[0]], "numpy_median": [], "tf": [tf_matmul_gflops()[0]], "tf_median": []}
    log(f"matmul numpy {machine['numpy'][0]:.0f}, TF {machine['tf'][0]:.0f} GFLOP/s; "
        f"{flops['train']:,} training FLOPs per example")

    order = variant_order(spec)
    configs, steps, inputs, memory = setup_variants(spec, workdir, args.batch, args.warmup, order[:2])
    input_rates = {kind: round(input_rate(inputs[kind], 20) * args.batch, 1) for kind in ("tfrecord", "cached")}
    log(f"input alone: {input_rates} examples/s")
    # The headline first, while the process holds only what it compares (as a training process
    # holds one model): the spec's variant, the other expert form, and one step per call.
    head = headline_configs(spec, steps, inputs, args.batch)
    head_machine = {"numpy": [], "numpy_median": [], "tf": [], "tf_median": []}
    log(f"headline: {args.headline_rounds} rounds of {', '.join(c.key for c in head)}")
    time_interleaved(head, args.headline_rounds, args.headline_steps, args.block_warmup, head_machine)
    more, more_steps, _, more_memory = setup_variants(spec, workdir, args.batch, args.warmup, order[2:], inputs)
    configs, steps, memory = configs + more, {**steps, **more_steps}, {**memory, **more_memory}
    sweep = setup_sweep(spec, workdir, sorted(set(args.sweep) - {args.batch}), args.warmup, args.batch)
    log(f"every configuration: {args.rounds} rounds")
    time_interleaved(configs + sweep, args.rounds, args.steps, args.block_warmup, machine)

    default = ("fused" if spec.model.fused_experts else "naive", spec.training.jit_compile)
    log("profile of the default step")
    prof = profile(steps[default], inputs["memory_batch"], flops["input_width"], repeats=5)
    prof["experts_gflops"] = round(3 * flops["forward"]["experts"] * args.batch / prof["experts_forward_backward_ms"] / 1e6, 1)
    prof["step_gflops"] = round(flops["train"] * args.batch / prof["step_ms"] / 1e6, 1)
    log(f"profile: {prof}")
    # by op type in graph mode: under XLA the whole gradient is one opaque cluster
    ops = {"step": f"{default[0]}/graph", **op_profile(steps[(default[0], False)], inputs["memory_batch"])}
    log(f"op profile: {ops}")
    banks = expert_banks(args.rounds)
    log(f"expert bank alone, forward + backward: {banks}")

    fastest_matmul = max(machine["numpy"] + head_machine["numpy"])

    def table(timed: list, phase_machine: dict) -> dict:
        rows = {}
        for config in timed:  # against the median product of the phase's rounds
            rows[config.key] = summarize(config, flops["train"], median(phase_machine["numpy_median"]), fastest_matmul)
            rows[config.key]["peak_rss_mb"] = memory.get((config.experts, config.jit)) if config.batch == args.batch else None
        return rows

    head_rows = table(head, head_machine)
    rows = table(configs + sweep, machine)
    result = {
        **headline(head_rows, rows, default, flops["train"], fastest_matmul, memory, args.batch,
                   "cached" if spec.training.cache else "tfrecord", spec.training.steps_per_execution),
        "tf_matmul_gflops": round(max(machine["tf"] + head_machine["tf"]), 1),
        "tf_matmul_gflops_median": round(median(head_machine["tf_median"]), 1),
        "reference": "8 categorical features x 16-dim embeddings + 4 numeric (132 inputs); MMoE, 8 experts "
                     "256->128; towers 64; click + engagement (masked by click); feature_specs/train_reference.yaml",
        "step_source": "mmoe.loop.Trainer.train_steps (training.steps_per_execution steps per call; x1: Trainer.train_step)",
        "flops": {**flops, "formula": FLOPS_FORMULA},
        "machine": {"cpus": os.cpu_count(), "numpy_matmul_gflops": [round(m, 1) for m in machine["numpy"]],
                    "tf_matmul_gflops": [round(m, 1) for m in machine["tf"]],
                    "numpy_matmul_gflops_headline": [round(m, 1) for m in head_machine["numpy"]],
                    "numpy_matmul_gflops_median_product": [round(m, 1) for m in machine["numpy_median"]],
                    "numpy_matmul_gflops_median_product_headline": [round(m, 1) for m in head_machine["numpy_median"]],
                    "tf_matmul_gflops_headline": [round(m, 1) for m in head_machine["tf"]],
                    "roofline_denominator": "matmul_gflops: the median of the headline rounds' median numpy "
                                            "products (7 after each round), measured under the same background "
                                            "load as the steps; matmul_gflops_fastest, the fastest product of "
                                            "the run, is the denominator of *_vs_fastest_matmul and *_best_round",
                    "tf_matmul_gflops_median_product_headline": [round(m, 1) for m in head_machine["tf_median"]],
                    "cpu": describe_cpu()},
        "input_alone_examples_per_s": input_rates,
        "data": {**data, "train_batches_per_epoch": inputs["batches_per_epoch"]},
        "settings": {k: v for k, v in vars(args).items() if k != "prepare"},
        "profile": prof,
        "op_profile": ops,
        "expert_bank_alone": {"sizes": {k: {"batch": v[0], "input_width": v[1], "experts": v[2], "units": list(v[3])}
                                        for k, v in EXPERT_SIZES.items()}, **banks},
        "headline_configs": list(head_rows.values()),
        "configs": list(rows.values()),
    }
    # the same step against TensorFlow's own product, where its kernels outrun numpy's
    result["roofline_fraction_vs_tf_matmul"] = round(
        head_rows[result["default_config"]]["achieved_gflops"] / result["tf_matmul_gflops_median"], 3)
    result["input_wait"] = input_wait(head_rows, result["default_config"], input_rates)
    result["steps_per_call_gain_by_batch"] = {
        row["batch"]: round(row["examples_per_s"] / rows[config_key({**row, "steps_per_execution": 1})]["examples_per_s"], 3)
        for row in rows.values()
        if row["steps_per_execution"] > 1 and config_key({**row, "steps_per_execution": 1}) in rows
    }
    write_results(result, args, wall)
    _ITERATORS.append((inputs, configs, sweep))
    return result


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # see _ITERATORS
