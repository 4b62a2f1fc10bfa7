"""The `mmoe` command's flags: one parser for every sub-command, each flag in one dashed spelling.

Plain argparse (and the names it offers as choices, none of which start TensorFlow): `mmoe --help`
stays instant. :func:`dashed_spelling` accepts the snake_case spelling Beam's flags use as an alias.
"""

from __future__ import annotations

import argparse
import os

from data_sets.clicklog import OWN_FACTORS
from feature_specs.input_formats import INPUT_FORMATS
from feature_specs.spec import MAX_BATCH_SIZE, MAX_EPOCHS
from mmoe.architectures import ARCHITECTURES  # no Keras until a model is built
from mmoe.baselines import DEFAULT_BASELINES  # no TensorFlow at import
from mmoe_cli.compare_command import add_compare_parser
from mmoe_cli.flag_types import FRACTION, float_in, int_in
from mmoe_cli.spec_commands import add_spec_parser
from serving.batching import DEFAULT_DRAIN_SECONDS, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_ENQUEUED_BATCHES
from serving.config import DEFAULT_BATCH_MAX_SIZE, DEFAULT_BATCH_TIMEOUT_MS, DEFAULT_POLL_SECONDS
from serving.ports import DEFAULT_GRPC_PORT, DEFAULT_HOST, DEFAULT_PORT
from serving.versions import DEFAULT_VERSION_POLICY, POLICY_FORMS, VERSION_LABELS_FLAG, VERSIONS_FLAG
from serving.workers import DEFAULT_MAX_RESTARTS, RESTART_WINDOW_SECONDS, default_workers

DEFAULT_WORKDIR = os.path.join("runs", "clicklog")
SPELLING_NOTE = "Flags are written with dashes (--input-format); the snake_case spelling (--input_format) is accepted too, as Beam writes its own."

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
    group.add_argument("--rows", type=int_in(1), default=100_000, help="impressions to generate (default: 100000)")
    group.add_argument("--seed", type=int_in(0), default=0, help="generator seed (default: 0)")
    group.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="raw file format (default: parquet)")
    group.add_argument(
        "--task-correlation", type=float_in(-1.0, 1.0), default=0.5,
        help="how related click and dwell drivers are, -1..1; below 0 they conflict: what draws a click shortens "
        "the dwell (default: 0.5)",
    )
    group.add_argument(
        "--corrupt-fraction", type=FRACTION, default=0.001,
        help="share of rows made invalid so validation has something to reject (default: 0.001)",
    )
    group.add_argument(
        "--interest-weight", type=float_in(0.0, 10.0), default=0.0,
        help="click-logit weight of a drifting per-user interest that only a behaviour history reveals "
        "(data_sets/clicklog.py; default: 0, none)",
    )
    group.add_argument(
        "--own-factor", choices=OWN_FACTORS, default=OWN_FACTORS[0],
        help="the dwell-only driver: latent vectors of its own (separate), the click's through a random rotation "
        "(rotated), or a function of age x price that conflicts with one added to the click (dense; "
        f"data_sets/clicklog.py; default: {OWN_FACTORS[0]})",
    )
    group.add_argument("--chunk-rows", type=int_in(1), default=50_000, help="rows per written file (default: 50000)")


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=None,
                       help="epochs (default: the spec's training.epochs)")
    group.add_argument("--batch-size", type=int_in(1, MAX_BATCH_SIZE), default=None,
                       help="batch size (default: the spec's training.batch_size)")
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
        "--max-reject-rate", type=FRACTION, default=None,
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
    group.add_argument(
        "--table", action="append", default=None, metavar="NAME=PATTERN",
        help="input of one side table of the spec's tables: section (overrides its input:); repeat per table",
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


DEBUG_HELP = ("on a mistake in the input (spec, file, flag, workdir), show the Python traceback "
              "instead of the one-line message")


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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"bind address (default: {DEFAULT_HOST})")
    serve.add_argument("--port", type=int_in(0, 65535), default=DEFAULT_PORT,
                       help=f"REST port (default: {DEFAULT_PORT}, TF Serving's)")
    serve.add_argument("--grpc-port", type=int_in(0, 65535), default=DEFAULT_GRPC_PORT,
                       help=f"TF Serving's gRPC API (PredictionService, ModelService) on this port "
                       f"(default: {DEFAULT_GRPC_PORT}, TF Serving's)")
    serve.add_argument("--no-grpc", action="store_true", help="serve REST only")
    serve.add_argument("--workers", type=int_in(1), default=default_workers(),
                       help="server processes sharing the REST and gRPC ports (SO_REUSEPORT, Linux), each with its "
                       "own TensorFlow runtime, model copy, batchers, limits and metrics, so each adds about one "
                       "server's memory (about 0.7 GiB resident plus the loaded versions' weights); a worker that "
                       f"dies is restarted ({DEFAULT_MAX_RESTARTS} times within {RESTART_WINDOW_SECONDS:g} s at most); "
                       "1 serves in this process "
                       f"(default: the CPUs this process may use, {default_workers()} here)")
    serve.add_argument("--max-concurrent-requests", type=int_in(1), default=DEFAULT_MAX_CONCURRENT_REQUESTS,
                       help="model requests in progress at once; more get 503 + Retry-After "
                       f"(default: {DEFAULT_MAX_CONCURRENT_REQUESTS})")
    serve.add_argument("--max-enqueued-batches", type=int_in(1), default=DEFAULT_MAX_ENQUEUED_BATCHES,
                       help="each batching queue's bound, in batches of --batch-max-size rows; past it 503 "
                       f"(default: {DEFAULT_MAX_ENQUEUED_BATCHES})")
    serve.add_argument("--drain-seconds", type=float_in(0.0), default=DEFAULT_DRAIN_SECONDS,
                       help=f"on SIGTERM, how long requests in progress may take to finish (default: {DEFAULT_DRAIN_SECONDS:g})")
    serve.add_argument("--batch-max-size", type=int_in(1), default=DEFAULT_BATCH_MAX_SIZE,
                       help=f"most rows merged into one model call; 1 disables batching (default: {DEFAULT_BATCH_MAX_SIZE})")
    serve.add_argument("--batch-timeout-ms", type=float_in(0.0), default=DEFAULT_BATCH_TIMEOUT_MS,
                       help=f"longest a request waits for others to batch with (default: {DEFAULT_BATCH_TIMEOUT_MS:g})")
    serve.add_argument("--poll-seconds", type=float_in(0.0), default=DEFAULT_POLL_SECONDS,
                       help=f"how often new versions are looked for; 0 disables hot reload (default: {DEFAULT_POLL_SECONDS:g})")
    serve.add_argument(VERSIONS_FLAG, default=str(DEFAULT_VERSION_POLICY), metavar="POLICY",
                       help=f"which versions to serve, as TF Serving's model_version_policy: {POLICY_FORMS} "
                       f"(default: {DEFAULT_VERSION_POLICY}, only the newest)")
    serve.add_argument(VERSION_LABELS_FLAG, default=None, metavar="LABEL=V,...",
                       help="names for versions, as TF Serving's version_labels, e.g. stable=3,canary=4; a request "
                       "picks one with /v1/models/<name>/labels/<label>. Each must point to a version "
                       f"{VERSIONS_FLAG} serves (default: none)")
    add_compare_parser(commands)
    add_spec_parser(commands)
    _accept_debug_anywhere(parser)
    return parser


def _accept_debug_anywhere(parser: argparse.ArgumentParser) -> None:
    """Lets ``--debug`` follow any sub-command too (``mmoe train --debug``), as users type it; the
    sub-commands' copies default to SUPPRESS, so they never overwrite the top-level flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--debug" not in sub._option_string_actions:
                    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
                _accept_debug_anywhere(sub)


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
