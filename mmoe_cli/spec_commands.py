"""`mmoe spec`: propose a spec for a new log (`infer`) and check a spec and data (`check`).

    mmoe spec infer DATA --label click=COL [--label engagement=COL] [--group-by COL] [--keep-feature COL]
                         [--table NAME[:KEY]=PATTERN] [--out FILE]
    mmoe spec check SPEC [DATA]

Only argparse and the sampler's constants at import time: the work is imported when a command runs, so `mmoe --help` stays
instant (and neither command needs TensorFlow or Beam).
"""

from __future__ import annotations

import argparse
import os
import sys

from feature_specs.input_formats import INPUT_FORMATS
from feature_specs.sample import SAMPLE_ROWS as DEFAULT_MAX_ROWS  # pyarrow, no TensorFlow: --help stays quick
from mmoe_cli.flag_types import int_in


def _label(text: str) -> tuple[str, str]:
    """``TASK=COLUMN`` -> (task, column); a bare ``COLUMN`` names a task after its column."""
    task, sep, column = text.partition("=")
    if not sep:
        task, column = text, text
    if not task or not column:
        raise argparse.ArgumentTypeError(f"expected TASK=COLUMN, e.g. click=clicked, got {text!r}")
    return task, column


def add_spec_parser(commands) -> argparse.ArgumentParser:
    """Adds ``mmoe spec {infer,check}`` to the ``mmoe`` sub-command parsers.

    Args:
        commands: the ``argparse`` sub-parsers action of ``mmoe`` (``add_subparsers()``'s result).

    Returns:
        The ``spec`` parser.
    """
    spec = commands.add_parser("spec", help="propose a feature spec for a new log (infer), or check a spec and data (check)")
    actions = spec.add_subparsers(dest="spec_command", required=True, metavar="ACTION")

    infer = actions.add_parser(
        "infer", help="read a sample of DATA and print a complete spec, every choice explained in a comment",
        description="Reads the first --max-rows rows of a CSV, Parquet, JSONL or TFRecord log (a file or a quoted glob) and "
        "prints a feature spec that `mmoe run --spec FILE --input DATA` runs as is.")
    infer.add_argument("data", metavar="DATA", help="log file or glob, e.g. 'logs/day1.csv' or 'logs/part-*.parquet'")
    infer.add_argument(
        "--label", action="append", type=_label, default=[], metavar="TASK=COLUMN", required=True,
        help="a task and its label column, in task order; the first is the click-like task when 0/1 (a first "
        "label that is not 0/1 makes a regression-only spec, e.g. --label stars=rating), "
        "e.g. --label click=clicked --label engagement=dwell_seconds")
    infer.add_argument("--group-by", default=None, metavar="COLUMN",
                       help="request id: candidates of one request are ranked together and split together")
    infer.add_argument("--keep-feature", action="append", default=[], metavar="COLUMN",
                       help="keep COLUMN as a feature although it looks like an outcome of the impression or a leaked "
                       "label (left out by default: listed on stderr with the reason); only for values known at "
                       "ranking time")
    infer.add_argument(
        "--table", action="append", default=[], metavar="NAME[:KEY]=PATTERN",
        help="a side table keyed by a column of the log (users, items), e.g. --table movies=raw/movies.csv or "
        "--table movies:movieId=raw/movies.csv; KEY defaults to the one column the table shares with the log. "
        "Its columns are profiled like the log's (ids, constants, time, leaks left out with the reason; lists "
        "proposed as lists) and written to the spec's tables: section with input: PATTERN and missing_key: "
        "default (the key coverage found is in the comment); repeat per table")
    infer.add_argument("--max-rows", type=int_in(1), default=DEFAULT_MAX_ROWS,
                       help=f"rows sampled at most, from the start, of DATA and of each table (default: {DEFAULT_MAX_ROWS})")
    infer.add_argument("--name", default=None, help="spec and served model name (default: from the file name)")
    infer.add_argument("--input-format", choices=INPUT_FORMATS, default=None,
                       help="default: from the extension")
    infer.add_argument("--out", default=None, metavar="FILE", help="write the YAML here instead of stdout")

    check = actions.add_parser(
        "check", help="validate SPEC, and DATA against it: missing or mistyped columns, named (exit 2 on problems); "
        "warns of features that predict a label almost perfectly or look like outcomes of the impression")
    check.add_argument("spec_path", metavar="SPEC", help="feature spec YAML")
    check.add_argument("data", metavar="DATA", nargs="?", default=None, help="log file or glob to check against SPEC")
    check.add_argument("--max-rows", type=int_in(1), default=DEFAULT_MAX_ROWS,
                       help=f"rows of DATA sampled at most (default: {DEFAULT_MAX_ROWS})")
    check.add_argument("--input-format", choices=INPUT_FORMATS, default=None,
                       help="default: from the extension")
    return spec


def _infer(args) -> int:
    from feature_specs.infer import InferError, infer_spec
    from feature_specs.table_choices import table_requests

    labels = dict(args.label)
    if len(labels) != len(args.label):
        print("mmoe spec infer: each task may be given once with --label", file=sys.stderr)
        return 2
    try:
        inferred = infer_spec(args.data, labels, group_by=args.group_by, max_rows=args.max_rows,
                              name=args.name, input_format=args.input_format, keep_features=args.keep_feature,
                              tables=table_requests(args.table))
    except InferError as exc:
        print(f"mmoe spec infer: {exc}", file=sys.stderr)
        return 2
    for line in inferred.summary():
        print(f"mmoe spec infer: {line}", file=sys.stderr)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(inferred.yaml)
        excluded = [c for c in inferred.choices if c.role == "excluded"]
        print(f"wrote {args.out}: {len(inferred.spec.features)} features, tasks "
              f"{', '.join(inferred.spec.task_names)}, {len(excluded)} column(s) left out "
              f"(see the comments), from {inferred.sample_rows:,} sampled rows", file=sys.stderr)
        print(f"next: mmoe spec check {args.out} '{args.data}' && mmoe run --spec {args.out} --input '{args.data}'",
              file=sys.stderr)
    else:
        sys.stdout.write(inferred.yaml)
    return 0


def _check(args) -> int:
    from feature_specs.check import check_report

    problems, warnings = check_report(args.spec_path, args.data, max_rows=args.max_rows, input_format=args.input_format)
    problems += _model_problems(args.spec_path) if not problems else []
    if problems:
        for problem in problems:
            print(f"mmoe spec check: {problem}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"mmoe spec check: warning: {warning}", file=sys.stderr)
    against = f" and {args.data} fits it (sampled)" if args.data else ""
    print(f"{args.spec_path}: valid{against}")
    return 0


def _model_problems(spec_path: str) -> list[str]:
    """What the model stage would refuse in a spec that loads: an unknown architecture."""
    from feature_specs.spec import SpecError
    from feature_specs.spec_reader import load_spec
    from mmoe.architectures import check_architecture

    try:
        check_architecture(load_spec(spec_path))
    except SpecError as exc:
        return [str(exc)]
    return []


def cmd_spec(args, extra: list[str]) -> int:
    """Runs ``mmoe spec infer`` or ``mmoe spec check``; returns the exit code (2 on problems)."""
    if args.spec_command == "infer":
        return _infer(args)
    return _check(args)
