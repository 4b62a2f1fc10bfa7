"""`mmoe`: the command line. Each sub-command runs one stage from the previous stage's artifacts.

    mmoe run        generate (or read) raw logs -> preprocess -> train -> evaluate -> export
    mmoe generate   write a synthetic impression log (Parquet or CSV)
    mmoe preprocess Beam pipeline: validate, split, analyze, write TFRecords + artifacts
    mmoe train      train the MMoE on data/, evaluate on the eval split, write metrics.json
    mmoe evaluate   recompute metrics.json from the trained model
    mmoe export     write the SavedModel to <workdir>/export/<spec name>/<version>/
    mmoe serve      REST server: TF Serving's predict API plus :rank, batching, hot reload
    mmoe spec       propose a spec for a new log (infer), check a spec and data against it (check)

Nothing imports this module; it imports the stages lazily so `mmoe --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from feature_specs.input_formats import INPUT_FORMATS  # plain Python: keeps --help instant
from mmoe.architectures import ARCHITECTURES, check_architecture  # no Keras until a model is built: keeps --help instant
from mmoe.baselines import DEFAULT_BASELINES  # no TensorFlow at import
from mmoe.overrides import with_overrides  # plain Python
from mmoe_cli.console import configure_logging, progress_verbosity, start_tensorflow_quietly
from mmoe_cli.spec_commands import add_spec_parser, cmd_spec  # argparse only

DEFAULT_WORKDIR = os.path.join("runs", "clicklog")
GENERATOR_MANIFEST = "_generator.json"
SPELLING_NOTE = "Flags are written with dashes (--input-format); the snake_case spelling (--input_format) is accepted too, as Beam writes its own."

def _default_spec() -> str:
    from feature_specs.spec import bundled_spec_path

    return bundled_spec_path("clicklog")


def _add_workdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", default=DEFAULT_WORKDIR,
        help=f"run directory (local path or filesystem URI) holding every stage's output (default: {DEFAULT_WORKDIR})",
    )


def _add_spec(parser: argparse.ArgumentParser, default_from_workdir: bool = False) -> None:
    if default_from_workdir:
        parser.add_argument(
            "--spec", default=None,
            help="feature spec YAML (default: <workdir>/artifacts/spec.json, the spec the data was made with)",
        )
    else:
        parser.add_argument(
            "--spec", default=None, help="feature spec YAML (default: the bundled feature_specs/clicklog.yaml)"
        )


def _add_generate_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("synthetic data (clicklog)")
    group.add_argument("--rows", type=int, default=100_000, help="impressions to generate (default: 100000)")
    group.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    group.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="raw file format (default: parquet)")
    group.add_argument(
        "--task-correlation", type=float, default=0.5,
        help="how related click and dwell drivers are, 0..1 (default: 0.5)",
    )
    group.add_argument(
        "--corrupt-fraction", type=float, default=0.001,
        help="share of rows made invalid so validation has something to reject (default: 0.001)",
    )
    group.add_argument("--chunk-rows", type=int, default=50_000, help="rows per written file (default: 50000)")


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=None, help="epochs (default: the spec's training.epochs)")
    group.add_argument("--batch-size", type=int, default=None, help="batch size (default: the spec's training.batch_size)")
    group.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar (the default when stdout is not a terminal)")
    group.add_argument(
        "--model", default=None, choices=ARCHITECTURES,
        help="architecture (default: the spec's model.architecture)",
    )
    group.add_argument(
        "--baselines", action="store_true",
        help=f"also train {' and '.join(DEFAULT_BASELINES)} on the same data; their metrics go beside the "
        "model's in metrics.json and model/report.html",
    )


def _add_resume_and_cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fresh", action="store_true",
        help="start from scratch even if <workdir>/model/checkpoints holds an interrupted run (default: resume it)",
    )
    parser.add_argument(
        "--distributed", action="store_true",
        help="train with tf.distribute.MultiWorkerMirroredStrategy; the cluster and this worker's "
        "role come from the TF_CONFIG environment variable. Start one process per worker.",
    )


def _add_preprocess_args(parser: argparse.ArgumentParser, required_input: bool) -> None:
    group = parser.add_argument_group("preprocessing (Beam)")
    group.add_argument(
        "--input", required=required_input, default=None,
        help="raw log file pattern, e.g. 'logs/2026-11-*.parquet' or 'gs://bucket/logs/*.csv'"
        + ("" if required_input else " (default: generate a synthetic clicklog into <workdir>/raw)"),
    )
    group.add_argument("--input-format", choices=INPUT_FORMATS, default=None, help="default: from the file extension")
    group.add_argument(
        "--max-reject-rate", type=float, default=None,
        help="fail (after writing report.json) above this share of rejected rows (default: the spec's "
        "pipeline.max_reject_rate)",
    )
    group.add_argument(
        "--reuse-artifacts", default=None, metavar="DIR",
        help="an earlier run's workdir: write its vocabularies and statistics instead of analyzing this train split",
    )
    group.add_argument(
        "--events", action="append", default=None, metavar="NAME=PATTERN",
        help="input of one event source of the spec's sources: section (label join); repeat per source",
    )
    parser.epilog = (
        "Unrecognized --flags are passed to Beam as PipelineOptions, e.g. --runner=DataflowRunner "
        "--project=P --region=R --temp_location=gs://B/tmp, or --direct_num_workers=2 "
        "--direct_running_mode=multi_processing for the local multi-process runner. "
        + SPELLING_NOTE
    )


def _add_export_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("export")
    group.add_argument("--export-base", default=None, help="SavedModel base directory (default: <workdir>/export)")
    group.add_argument("--version", type=int, default=None, help="integer version (default: newest + 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmoe",
        description="Multi-task ranking with a Multi-gate Mixture-of-Experts: Beam preprocessing, "
        "Keras 3 training, TensorFlow SavedModel export. One feature spec drives every stage.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="debug logging, and TensorFlow's and Beam's start-up messages (hidden by default)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the whole job: data -> preprocess -> train -> evaluate -> export")
    _add_spec(run)
    _add_workdir(run)
    _add_preprocess_args(run, required_input=False)
    _add_generate_args(run)
    _add_train_args(run)
    _add_export_args(run)

    generate = commands.add_parser("generate", help="write a synthetic clicklog impression log")
    generate.add_argument("--out", default=None, help="output directory (default: <workdir>/raw)")
    _add_workdir(generate)
    _add_generate_args(generate)

    preprocess = commands.add_parser("preprocess", help="Beam: validate, split, analyze, write TFRecords")
    _add_spec(preprocess)
    _add_workdir(preprocess)
    _add_preprocess_args(preprocess, required_input=True)

    train = commands.add_parser("train", help="train and evaluate the MMoE on <workdir>/data")
    _add_spec(train, default_from_workdir=True)
    _add_workdir(train)
    _add_train_args(train)
    _add_resume_and_cluster_args(train)

    evaluate = commands.add_parser("evaluate", help="recompute metrics.json from the trained model")
    _add_spec(evaluate, default_from_workdir=True)
    _add_workdir(evaluate)

    export = commands.add_parser("export", help="write the trained model as a SavedModel")
    _add_spec(export, default_from_workdir=True)
    _add_workdir(export)
    _add_export_args(export)

    serve = commands.add_parser("serve", help="serve exported SavedModels over REST (TF Serving API + :rank)")
    _add_workdir(serve)
    serve.add_argument("--model-base", default=None, help="export base directory (default: <workdir>/export)")
    serve.add_argument("--model-name", default=None, help="model under the base (default: the only one there)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8501, help="port (default: 8501, TF Serving's REST port)")
    serve.add_argument("--batch-max-size", type=int, default=4096,
                       help="most rows merged into one model call; 1 disables batching (default: 4096)")
    serve.add_argument("--batch-timeout-ms", type=float, default=2.0,
                       help="longest a request waits for others to batch with (default: 2)")
    serve.add_argument("--poll-seconds", type=float, default=2.0,
                       help="how often new versions are looked for; 0 disables hot reload (default: 2)")
    add_spec_parser(commands)
    return parser


# --------------------------------------------------------------------------------------------
# Stages


def _load_spec(path: str | None):
    from feature_specs.spec import load_spec

    return check_architecture(load_spec(path or _default_spec()))


def _workdir_spec(args, trained: bool = False):
    """The spec a stage after preprocessing uses: --spec, else the one the model was trained with
    (``trained``: model/spec.json), else the one the data was made with (artifacts/spec.json)."""
    if args.spec:
        return _load_spec(args.spec)
    import tensorflow as tf

    from feature_specs.artifacts import Workdir
    from feature_specs.spec import spec_from_dict

    workdir = Workdir(args.workdir)
    path = workdir.trained_spec_json if trained and tf.io.gfile.exists(workdir.trained_spec_json) else workdir.spec_json
    if not tf.io.gfile.exists(path):
        raise SystemExit(f"mmoe: {path} is missing: run `mmoe preprocess --workdir {args.workdir}` first")
    with tf.io.gfile.GFile(path) as handle:
        return check_architecture(spec_from_dict(json.load(handle), source=path))


def _generate(args, out_dir: str) -> str:
    """Generates the synthetic log into ``out_dir`` unless the same one is already there."""
    from data_sets.clicklog import generate_clicklog

    params = {k: getattr(args, k) for k in ("rows", "seed", "format", "task_correlation", "corrupt_fraction", "chunk_rows")}
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
    from pipelines.options import parse_event_inputs

    return preprocess(
        spec, input_pattern, args.workdir, input_format=args.input_format, beam_args=beam_args,
        max_reject_rate=args.max_reject_rate, reuse_artifacts=args.reuse_artifacts,
        event_inputs=parse_event_inputs(args.events) if args.events else None,
    )


def _strategy(args):
    """MultiWorkerMirroredStrategy when --distributed (created before any other TF op), else None."""
    if not getattr(args, "distributed", False):
        return None
    if not os.environ.get("TF_CONFIG"):
        raise SystemExit("mmoe: --distributed needs TF_CONFIG (the cluster and this worker's task) in the environment")
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
    return export_saved_model(spec, serving_model, base, version=args.version,
                              warmup_examples=_warmup_examples(workdir))


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
        raise SystemExit(f"mmoe: spec {spec.name!r} has no generator; pass --input with its raw log files")
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

    spec = _workdir_spec(args, trained=True)
    path = _export(spec, args, load_trained_models(spec, Workdir(args.workdir)).serving)
    print(f"SavedModel: {path}")
    return 0


def cmd_serve(args, beam_args: list[str]) -> int:
    from feature_specs.artifacts import Workdir
    from serving.server import serve

    serve(
        args.model_base or Workdir(args.workdir).export_base, model_name=args.model_name, host=args.host,
        port=args.port, batch_max_size=args.batch_max_size, batch_timeout_ms=args.batch_timeout_ms,
        poll_seconds=args.poll_seconds,
    )
    return 0


COMMANDS = {
    "run": cmd_run, "generate": cmd_generate, "preprocess": cmd_preprocess, "train": cmd_train,
    "evaluate": cmd_evaluate, "export": cmd_export, "serve": cmd_serve, "spec": cmd_spec,
}
BEAM_COMMANDS = ("run", "preprocess")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` that ``parser`` or one of its sub-commands declares."""
    flags = set()
    for action in parser._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= option_strings(sub)
    return flags


def dashed_spelling(argv: list[str], known: set[str]) -> list[str]:
    """``argv`` with the snake_case spelling of this CLI's flags (``--input_format``) written as
    declared (``--input-format``); flags it does not declare (Beam's) are left as they are."""
    spelled = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        dashed = name.replace("_", "-")
        spelled.append(dashed + sep + value if name.startswith("--") and dashed in known else arg)
    return spelled


TENSORFLOW_COMMANDS = ("run", "preprocess", "train", "evaluate", "export", "serve")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mmoe` console script; returns the process exit code."""
    parser = build_parser()
    argv = dashed_spelling(sys.argv[1:] if argv is None else list(argv), option_strings(parser))
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in BEAM_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose)
    if args.command in TENSORFLOW_COMMANDS:
        start_tensorflow_quietly(args.verbose)
    from feature_specs.spec import SpecError

    try:
        return COMMANDS[args.command](args, extra)
    except SpecError as exc:
        print(f"mmoe: invalid spec: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:  # a missing input, a bad flag value or file
        if args.verbose:
            raise
        print(f"mmoe: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
