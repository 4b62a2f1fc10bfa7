"""``mmoe compare``: several architectures, several seeds, one loop and budget, paired verdicts.

On a preprocessed workdir, each architecture is trained once per seed by the training loop
``mmoe train`` runs (:class:`mmoe.loop.Trainer`), with the spec's training settings (epochs,
batch, learning rate, early stopping: the same budget for every model), and evaluated by the same
code (:mod:`mmoe.evaluate`) on the eval split (or on other files, e.g. a held-out test split).
Seed ``s`` sets initialization, shuffling and dropout alike for every model, so the models'
results pair by seed.

The summary (:func:`summarize`, plain NumPy) gives per task and metric the values per seed, and
for each model against ``single_task`` (and each gated model against ``shared_bottom``) the mean
paired difference with its 95% t-interval (:mod:`mmoe.paired`), the outcome per task and one
verdict (``gain``, ``no loss, no gain``, ``seesaw``, ``worse``, ``inconclusive``) on each task's
headline metric (AUC for binary tasks, RMSE for regression); and the gates' specialisation
(:mod:`mmoe.gate_diagnostics`). Written to ``<workdir>/compare.json``::

    {"models": {"<model>": {"<task>": {"<metric>": [per seed, ...]}}},
     "paired": {"<model> - <baseline>": {"tasks": {"<task>": {"<metric>": {...}}}, "verdict": ...}},
     "gates": {"<model>": {...}}, "seeds": [...], "headline": {"<task>": "<metric>"}, ...}

Each run's outputs go to ``model/compare/<model>/seed-<s>/``. This module imports TensorFlow only
inside the functions that train, so the CLI can read its defaults without starting it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from typing import Callable

import numpy as np

from feature_specs.artifacts import Workdir, join
from feature_specs.spec import FeatureSpec
from mmoe.architectures import GATED, OWN_AND_SHARED_EXPERTS
from mmoe.gate_diagnostics import summarize_gates
from mmoe.paired import compare_metric, metric_rule, verdict

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("mmoe", "shared_bottom", "single_task", "ple")
DEFAULT_SEEDS = 3
BASELINE = "single_task"
SHARED_BASELINE = "shared_bottom"  # what a gated model must also be at least as good as
COMPARE_JSON = "compare.json"
GATE_DIAGNOSTICS = "gate_diagnostics"


def compare_json_path(workdir: Workdir) -> str:
    return join(workdir.root, COMPARE_JSON)


def compare_report_path(workdir: Workdir) -> str:
    return join(workdir.model_dir, "compare.html")


def run_workdir(workdir: Workdir, model: str, seed: int) -> Workdir:
    """Where one run writes: ``model/compare/<model>/seed-<seed>/``, reading the same data."""
    return dataclasses.replace(workdir, model_root=join(workdir.model_dir, "compare", model, f"seed-{seed}"))


def seeds_for(spec: FeatureSpec, count: int) -> list[int]:
    """``count`` seeds starting at the spec's ``training.seed``."""
    return [spec.training.seed + k for k in range(count)]


def run_spec(spec: FeatureSpec, model: str, seed: int, epochs: int | None = None) -> FeatureSpec:
    """``spec`` with architecture ``model``, training seed ``seed`` and, if given, ``epochs``."""
    training = {"seed": seed, **({"epochs": epochs} if epochs else {})}
    return dataclasses.replace(
        spec,
        model=dataclasses.replace(spec.model, architecture=model),
        training=dataclasses.replace(spec.training, **training),
    )


def with_settings(spec: FeatureSpec, settings: list[str]) -> FeatureSpec:
    """``spec`` with ``KEY.PATH=VALUE`` settings applied, validated as a spec file would be.

    Args:
        spec: FeatureSpec.
        settings: e.g. ``["model.gate_temperature=0.5", "training.loss_weighting=uncertainty",
            "tasks.engagement.weight=1.0"]``; values are YAML (``[64]``, ``true``); a task is
            named by its name.

    Raises:
        feature_specs.spec.SpecError: a malformed setting, or a value the spec refuses (named by
            its key path, as for a spec file).
    """
    import yaml

    from feature_specs.spec import SpecError
    from feature_specs.spec_reader import spec_from_dict

    if not settings:
        return spec
    data = spec.to_dict()
    for setting in settings:
        path, sep, text = setting.partition("=")
        keys = [key for key in path.strip().split(".") if key]
        if not sep or len(keys) < 2:
            raise SpecError("--set", f"expected SECTION.KEY=VALUE, e.g. model.gate_temperature=0.5, got {setting[:60]!r}")
        node = data
        for depth, key in enumerate(keys[:-1]):
            if isinstance(node, list):  # tasks, features: by name
                node = next((item for item in node if item.get("name") == key), None)
            else:
                node = node.get(key)
            if not isinstance(node, (dict, list)):
                raise SpecError(".".join(keys[:depth + 1]), f"no such section in spec {spec.name!r} (--set {setting[:60]})")
        try:
            node[keys[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(path, f"value {text[:40]!r} is not YAML: {exc}") from None
    return spec_from_dict(data, source="--set")


def headline_metric(spec: FeatureSpec, task_name: str, metrics: dict) -> str:
    """The metric a task's verdict is read on: ``auc`` for binary tasks, ``rmse*`` for regression."""
    task = next(t for t in spec.tasks if t.name == task_name)
    wanted = "auc" if task.kind == "binary" else "rmse"
    for key in metrics:
        if key == wanted or key.startswith(wanted + "_"):
            return key
    raise KeyError(f"task {task_name!r} has no {wanted} metric among {sorted(metrics)}")


def task_scalars(metrics: dict, spec: FeatureSpec) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}``: the scalar, comparable metrics of one run's metrics.json dict."""
    scalars = {}
    for task in spec.task_names:
        values = metrics.get(task, {})
        scalars[task] = {
            key: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and metric_rule(key) is not None
        }
    return scalars


def train_and_evaluate(spec: FeatureSpec, workdir: Workdir, evaluation_files: list[str] | None = None,
                       verbose: int = 0) -> dict:
    """Trains ``spec`` (its architecture and seed) into ``workdir.model_dir``; returns its eval metrics.

    Args:
        spec: the run's spec (:func:`run_spec`).
        workdir: the run's Workdir (:func:`run_workdir`).
        evaluation_files: TFRecord files the final metrics are computed on; default the eval split
            (which also picks the best epoch).
        verbose: the loop's verbosity (0: silent).

    Returns:
        The metrics.json-shaped dict (:func:`mmoe.evaluate.compute_metrics`), with
        ``gate_diagnostics`` for gated models and ``training`` (epochs run, best epoch, seconds).
        A run that finished before with the same spec and evaluation files (its
        ``compare_run.json`` says so) is not trained again: its metrics are read back, with
        ``reused: True``, so an interrupted or extended comparison (more seeds) redoes nothing.
    """
    import keras
    import tensorflow as tf

    from mmoe.data import split_files
    from mmoe.evaluate import collect_predictions, compute_metrics
    from mmoe.gate_diagnostics import gate_diagnostics
    from mmoe.loop import Trainer
    from mmoe.model import GATE_WEIGHTS
    from mmoe.train import write_json

    files = evaluation_files or split_files(workdir, "eval")
    done_path, metrics_path = join(workdir.model_dir, "compare_run.json"), join(workdir.model_dir, "metrics.json")
    run = {"spec": json.loads(spec.to_json()), "evaluation_files": list(files)}
    if tf.io.gfile.exists(done_path) and tf.io.gfile.exists(metrics_path):
        with tf.io.gfile.GFile(done_path) as handle:
            same = json.load(handle) == run
        if same:  # this run finished before with the same spec and data: its metrics stand
            with tf.io.gfile.GFile(metrics_path) as handle:
                return {**json.load(handle), "reused": True}
    if tf.io.gfile.exists(done_path):
        tf.io.gfile.remove(done_path)
    started = time.time()
    keras.utils.set_random_seed(spec.training.seed)
    trainer = Trainer(spec, workdir)
    trainer.clear_checkpoints()
    history = trainer.fit(callbacks=(), verbose=verbose)
    trainer.clear_checkpoints()
    collected = collect_predictions(spec, trainer.models.serving, files)
    metrics = compute_metrics(spec, collected)
    if GATE_WEIGHTS in collected:
        shared = spec.model.num_experts if spec.model.architecture in OWN_AND_SHARED_EXPERTS else None
        metrics[GATE_DIAGNOSTICS] = gate_diagnostics(collected[GATE_WEIGHTS], spec.task_names, shared)
    metrics["training"] = {
        "epochs": len(history["loss"]), "best_epoch": int(trainer.best_epoch) + 1,
        "best_step": int(trainer.best_step), "seconds": time.time() - started,
    }
    write_json(metrics_path, metrics)
    write_json(done_path, run)  # last: a run killed before this line is trained again
    keras.backend.clear_session()  # the next run builds its models from scratch
    return metrics


Progress = Callable[[str], None]


def run_comparison(spec: FeatureSpec, workdir: Workdir, models=DEFAULT_MODELS, seeds: int = DEFAULT_SEEDS,
                   epochs: int | None = None, evaluation_files: list[str] | None = None,
                   progress: Progress = functools.partial(print, flush=True), verbose: int = 0) -> dict:
    """Trains every model with every seed and summarizes; writes ``compare.json``.

    Args:
        spec: the spec the data was made with (``artifacts/spec.json``).
        workdir: a preprocessed Workdir.
        models: architectures to train; ``single_task`` is added when missing (the baseline).
        seeds: int. Seeds per model, from the spec's ``training.seed`` up.
        epochs: the same epochs for every model (default: the spec's ``training.epochs``).
        evaluation_files: see :func:`train_and_evaluate`.
        progress: called with one line after each run and at the start.

    Returns:
        The summary (:func:`summarize`), also written to :func:`compare_json_path`.
    """
    from mmoe.train import write_json

    models = list(dict.fromkeys([*models, *([] if BASELINE in models else [BASELINE])]))
    seed_list = seeds_for(spec, seeds)
    runs: dict[str, list[dict]] = {model: [] for model in models}
    total, done, started = len(models) * len(seed_list), 0, time.time()
    progress(f"[compare] {len(models)} models x {len(seed_list)} seeds ({', '.join(map(str, seed_list))}) "
             f"on {workdir.root}: {', '.join(models)}")
    for seed in seed_list:  # seed-major: after the first pass every model has a result
        for model in models:
            metrics = train_and_evaluate(run_spec(spec, model, seed, epochs), run_workdir(workdir, model, seed),
                                         evaluation_files, verbose)
            runs[model].append(metrics)
            done += 1
            elapsed = time.time() - started
            shown = ", ".join(
                f"{task} {key} {metrics[task][key]:.4f}"
                for task in spec.task_names for key in [headline_metric(spec, task, metrics[task])]
            )
            took = "reused" if metrics.get("reused") else f"{metrics['training']['seconds']:.0f}s"
            progress(f"[compare] {done}/{total} {model} seed {seed}: {shown}, best epoch "
                     f"{metrics['training']['best_epoch']} ({took}; about {elapsed / done * (total - done):.0f}s left)")
    trained = run_spec(spec, spec.model.architecture, spec.training.seed, epochs).training
    summary = summarize(spec, runs, seed_list, budget=dataclasses.asdict(trained))
    summary["settings"] = {  # what every model shared besides the architecture
        "model": {k: v for k, v in dataclasses.asdict(spec.model).items() if k != "architecture"},
        "tasks": {task.name: {"loss": task.loss, "weight": task.weight} for task in spec.tasks},
    }
    write_json(compare_json_path(workdir), summary)
    return summary


def summarize(spec: FeatureSpec, runs: dict[str, list[dict]], seeds: list[int], budget: dict | None = None) -> dict:
    """The comparison of per-seed runs (plain NumPy).

    Args:
        spec: the spec (its tasks).
        runs: ``{model: [metrics.json dict per seed, in the order of seeds]}``.
        seeds: the seeds.
        budget: the training settings every model had (recorded as they were).

    Returns:
        The ``compare.json`` dict described in the module docstring.
    """
    models = {model: _per_seed(spec, results) for model, results in runs.items()}
    first = next(iter(runs.values()))[0]
    headline = {task: headline_metric(spec, task, first[task]) for task in spec.task_names}
    pairs = [(model, BASELINE) for model in runs if model != BASELINE and BASELINE in runs]
    pairs += [(model, SHARED_BASELINE) for model in runs if model in GATED and SHARED_BASELINE in runs]
    paired = {f"{model} - {baseline}": _paired(models[model], models[baseline], headline)
              for model, baseline in pairs}
    gates = {
        model: summarize_gates([r[GATE_DIAGNOSTICS] for r in results])
        for model, results in runs.items() if all(GATE_DIAGNOSTICS in r for r in results)
    }
    best_epochs = {model: [r.get("training", {}).get("best_epoch") for r in results] for model, results in runs.items()}
    return {
        "models": models, "paired": paired, "gates": gates, "seeds": list(seeds), "headline": headline,
        "baseline": BASELINE, "best_epoch": best_epochs, "budget": budget or {},
    }


def _per_seed(spec: FeatureSpec, results: list[dict]) -> dict:
    per_seed: dict[str, dict[str, list[float]]] = {}
    for metrics in results:
        for task, values in task_scalars(metrics, spec).items():
            for key, value in values.items():
                per_seed.setdefault(task, {}).setdefault(key, []).append(value)
    return per_seed


def _paired(model: dict, baseline: dict, headline: dict[str, str]) -> dict:
    tasks = {}
    for task, metrics in model.items():
        tasks[task] = {
            key: compare_metric(values, baseline[task][key], metric_rule(key))
            for key, values in metrics.items() if key in baseline.get(task, {})
        }
    outcomes = {task: tasks[task][headline[task]]["outcome"] for task in headline}
    return {"tasks": tasks, "outcomes": outcomes, "verdict": verdict(outcomes)}


def load_comparison(workdir: Workdir) -> dict | None:
    """``compare.json`` of ``workdir``, or None when there is none."""
    import tensorflow as tf

    path = compare_json_path(workdir)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)


def mean_and_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of per-seed values."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0
