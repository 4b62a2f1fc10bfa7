"""The stages behind `mmoe run|generate|preprocess|train|evaluate|export|serve`.

Each ``cmd_<name>(args, beam_args) -> exit code`` runs one stage from the previous stage's
artifacts in ``--workdir``; TensorFlow, Beam and the model are imported when a stage runs. A
user's mistake is raised as :class:`~feature_specs.errors.UserError`, which ``mmoe`` prints on
one line.
"""

from __future__ import annotations

import functools
import json
import os
import time

from feature_specs.errors import UserError
from mmoe.architectures import check_architecture
from mmoe.baselines import DEFAULT_BASELINES
from mmoe.overrides import with_overrides
from mmoe_cli.console import progress_verbosity, start_worker_quietly

GENERATOR_MANIFEST = "_generator.json"


def _default_spec() -> str:
    from feature_specs.spec_reader import bundled_spec_path

    return bundled_spec_path("clicklog")


def _load_spec(path: str | None):
    from feature_specs.spec_reader import load_spec

    return check_architecture(load_spec(path or _default_spec()))


def _workdir_spec(args, trained: bool = False):
    """The spec a stage after preprocessing uses: --spec, else the one the model was trained with
    (``trained``: model/spec.json), else the one the data was made with (artifacts/spec.json)."""
    if args.spec:
        return _load_spec(args.spec)
    import tensorflow as tf

    from feature_specs.artifacts import Workdir
    from feature_specs.spec_reader import spec_from_dict

    workdir = Workdir(args.workdir)
    path = workdir.trained_spec_json if trained and tf.io.gfile.exists(workdir.trained_spec_json) else workdir.spec_json
    if not tf.io.gfile.exists(path):
        raise UserError(f"{path} is missing: run `mmoe preprocess --workdir {args.workdir}` first")
    with tf.io.gfile.GFile(path) as handle:
        return check_architecture(spec_from_dict(json.load(handle), source=path))


def _generate(args, out_dir: str) -> str:
    """Generates the synthetic log into ``out_dir`` unless the same one is already there."""
    from data_sets.clicklog import generate_clicklog

    params = {k: getattr(args, k) for k in ("rows", "seed", "format", "task_correlation", "corrupt_fraction", "chunk_rows",
                                          "interest_weight", "own_factor")}
    manifest = os.path.join(out_dir, GENERATOR_MANIFEST)
    pattern = os.path.join(out_dir, f"impressions-*.{args.format}")
    if os.path.exists(manifest):
        with open(manifest, encoding="utf-8") as handle:
            if json.load(handle) == params:
                print(f"[generate] reusing {pattern} (same parameters)")
                return pattern
    started = time.time()

    def progress(done: int, total: int) -> None:
        print(f"[generate] {done:,}/{total:,} rows", flush=True)

    files = generate_clicklog(
        out_dir, rows=args.rows, seed=args.seed, task_correlation=args.task_correlation, fmt=args.format,
        chunk_rows=args.chunk_rows, corrupt_fraction=args.corrupt_fraction, progress=progress,
        interest_weight=args.interest_weight, own_factor=args.own_factor,
    )
    with open(manifest, "w", encoding="utf-8") as handle:
        json.dump(params, handle)
    print(f"[generate] {len(files)} file(s) in {out_dir} ({time.time() - started:.1f}s)")
    return pattern


def _clear_stage_outputs(workdir) -> None:
    """Removes what training wrote before (the pipeline replaces its own outputs itself), so no
    model or metrics of an earlier run sit beside new data."""
    import tensorflow as tf

    for path in (workdir.model_dir,):
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    for path in (workdir.metrics_json,):
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def _preprocess(spec, args, input_pattern: str, beam_args: list[str]) -> dict:
    from feature_specs.artifacts import Workdir
    from pipelines.run import preprocess

    workdir = Workdir(args.workdir)
    _clear_stage_outputs(workdir)
    print(f"[preprocess] {input_pattern} -> {workdir.data_dir}", flush=True)
    from pipelines.options import parse_event_inputs, parse_table_inputs

    return preprocess(
        spec, input_pattern, args.workdir, input_format=args.input_format, beam_args=beam_args,
        max_reject_rate=args.max_reject_rate, reuse_artifacts=args.reuse_artifacts,
        event_inputs=parse_event_inputs(args.events) if args.events else None,
        table_patterns=parse_table_inputs(args.table) if args.table else None,
    )


def _strategy(args):
    """MultiWorkerMirroredStrategy when --distributed (created before any other TF op), else None."""
    if not getattr(args, "distributed", False):
        return None
    if not os.environ.get("TF_CONFIG"):
        raise UserError("--distributed needs TF_CONFIG (the cluster and this worker's task) in the environment")
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def _train(spec, args):
    strategy = _strategy(args)
    from feature_specs.artifacts import Workdir
    from mmoe.train import train

    spec = with_overrides(spec, epochs=args.epochs, batch_size=args.batch_size, architecture=args.model)
    print(f"[train] {spec.model.architecture}, tasks {', '.join(spec.task_names)}", flush=True)
    return train(spec, Workdir(args.workdir), verbose=progress_verbosity(args.quiet), strategy=strategy,
                 resume=not getattr(args, "fresh", False), baselines=DEFAULT_BASELINES if args.baselines else ())


WARMUP_EXAMPLES = 8


def _warmup_examples(workdir) -> list[bytes]:
    """A few serialized eval rows for the SavedModel's TF Serving warmup file."""
    import tensorflow as tf

    from mmoe.data import split_files

    records = tf.data.TFRecordDataset(split_files(workdir, "eval"), compression_type="GZIP")
    return [record.numpy() for record in records.take(WARMUP_EXAMPLES)]


def _export(spec, args, serving_model) -> str:
    from feature_specs.artifacts import Workdir
    from serving.export import export_saved_model

    workdir = Workdir(args.workdir)
    base = args.export_base or workdir.export_base
    from serving.table_lookup import read_snapshot

    snapshots = {t.name: read_snapshot(workdir.table_snapshot(t.name)) for t in spec.tables}
    return export_saved_model(spec, serving_model, base, version=args.version,
                              warmup_examples=_warmup_examples(workdir), table_snapshots=snapshots)


def format_metrics(metrics: dict) -> str:
    """The metrics a person checks first, one line per task."""
    lines = []
    for task, values in metrics.items():
        if task in ("gates", "training", "baselines"):
            continue
        flat = {}
        for key, value in values.items():  # one level of nesting, e.g. at_serving_values.calibration
            flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items())
        lines.append(f"  {task:<11} {shown}")
    for name, baseline in metrics.get("baselines", {}).items():
        lines.append(f"\n  baseline {name}:\n" + format_metrics(baseline))
    return "\n".join(lines)


def _print_summary(workdir, export_path: str | None) -> None:
    rows = [
        ("raw data", workdir.raw_dir),
        ("train/eval TFRecords", workdir.data_dir),
        ("vocabularies, statistics, spec", workdir.artifacts_dir),
        ("rejected rows", workdir.rejected_pattern),
        ("row counts", workdir.report_json),
        ("Keras model, checkpoints, logs", workdir.model_dir),
        ("plots", workdir.plots_dir),
        ("report", workdir.report_html),
        ("metrics", workdir.metrics_json),
    ]
    if export_path:
        rows.append(("SavedModel", export_path))
    print("\nArtifacts:")
    for label, path in rows:
        print(f"  {label:<32} {path}")


def cmd_run(args, beam_args: list[str]) -> int:
    from feature_specs.artifacts import Workdir

    spec = _load_spec(args.spec)
    workdir = Workdir(args.workdir)
    started = time.time()
    if args.input:
        input_pattern = args.input
    elif spec.name == "clicklog":
        input_pattern = _generate(args, workdir.raw_dir)
    else:
        raise UserError(f"spec {spec.name!r} has no generator; pass --input with its raw log files")
    _preprocess(spec, args, input_pattern, beam_args)
    result = _train(spec, args)
    path = _export(result.spec, args, result.models.serving)
    _print_summary(workdir, path)
    print(f"\nEval metrics ({workdir.metrics_json}):\n{format_metrics(result.metrics)}")
    print(f"\nDone in {time.time() - started:.0f}s.")
    return 0


def cmd_generate(args, beam_args: list[str]) -> int:
    from feature_specs.artifacts import Workdir

    _generate(args, args.out or Workdir(args.workdir).raw_dir)
    return 0


def cmd_preprocess(args, beam_args: list[str]) -> int:
    _preprocess(_load_spec(args.spec), args, args.input, beam_args)
    return 0


def cmd_train(args, beam_args: list[str]) -> int:
    from feature_specs.artifacts import Workdir

    result = _train(_workdir_spec(args), args)
    if not result.metrics:  # a non-chief worker of a distributed run: the chief writes the model
        print("[train] worker finished; the chief writes the model and metrics")
        return 0
    print(f"\nEval metrics ({Workdir(args.workdir).metrics_json}):\n{format_metrics(result.metrics)}")
    return 0


def cmd_evaluate(args, beam_args: list[str]) -> int:
    from feature_specs.artifacts import Workdir
    from mmoe.evaluate import evaluate
    from mmoe.train import load_trained_models, write_json

    spec, workdir = _workdir_spec(args, trained=True), Workdir(args.workdir)
    metrics = evaluate(spec, workdir, load_trained_models(spec, workdir).serving)
    write_json(workdir.metrics_json, metrics)
    print(f"Eval metrics ({workdir.metrics_json}):\n{format_metrics(metrics)}")
    return 0


def cmd_export(args, beam_args: list[str]) -> int:
    from feature_specs.artifacts import Workdir
    from mmoe.train import load_trained_models
    from serving.contract import check_version

    if args.version is not None:
        check_version(args.version)  # before loading the model: a bad --version fails at once
    spec = _workdir_spec(args, trained=True)
    path = _export(spec, args, load_trained_models(spec, Workdir(args.workdir)).serving)
    print(f"SavedModel: {path}")
    return 0


def cmd_serve(args, beam_args: list[str]) -> int:
    from feature_specs.artifacts import Workdir
    from serving.versions import parse_version_labels, parse_version_policy

    versions = parse_version_policy(args.versions)  # before any model loads: a bad flag fails at once
    version_labels = parse_version_labels(args.version_labels)
    from serving.launch import serve

    serve(
        args.model_base or Workdir(args.workdir).export_base, model_name=args.model_name, host=args.host,
        port=args.port, batch_max_size=args.batch_max_size, batch_timeout_ms=args.batch_timeout_ms,
        poll_seconds=args.poll_seconds, versions=versions, version_labels=version_labels,
        grpc_port=None if args.no_grpc else args.grpc_port, max_concurrent_requests=args.max_concurrent_requests,
        max_enqueued_batches=args.max_enqueued_batches, drain_seconds=args.drain_seconds, workers=args.workers,
        worker_initializer=functools.partial(start_worker_quietly, args.verbose),
    )
    return 0
