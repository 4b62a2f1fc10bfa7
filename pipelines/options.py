"""Command-line options of the preprocessing pipeline."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from feature_specs.errors import UserError
from feature_specs.input_formats import INPUT_FORMATS, format_from_extension


BATCH_ROWS = 1 << 16  # rows per Arrow batch: a few MB, large against the per-batch costs


class OptionError(UserError, ValueError):
    """A preprocess argument is wrong (the input format, ``--events``, ``--max_reject_rate``,
    ``--reuse_artifacts``); the message names the flag and what to pass."""


class MissingInputError(UserError, FileNotFoundError):
    """No file matches an input pattern, or a file the run needs is missing; the message names it."""


class PreprocessOptions(PipelineOptions):
    """Options of ``mmoe preprocess``; every other flag is a standard Beam pipeline option.

    Example::

        --spec feature_specs/clicklog.yaml --input 'gs://bucket/logs/*.parquet' \\
        --workdir gs://bucket/runs/1 --runner DataflowRunner ...
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--spec", default=None,
            help="Feature spec YAML (or spec.json) naming the columns, their types and checks, the "
                 "features' transforms and the train/eval split.")
        parser.add_argument(
            "--input", default=None,
            help="File pattern of the raw log, local or any Beam filesystem URI, e.g. "
                 "'logs/*.csv' or 'gs://bucket/logs/part-*.parquet'. CSV files need a header line.")
        parser.add_argument(
            "--input_format", default=None, choices=INPUT_FORMATS,
            help="Format of the input files. Defaults to the pattern's extension "
                 "(.csv, .csv.gz, ... -> csv; .parquet, .pq -> parquet; .jsonl, .ndjson, .json -> "
                 "jsonl; .tfrecord, .tfrecords, .tfrecord.gz -> tfrecord of tf.train.Example).")
        parser.add_argument(
            "--events", action="append", default=None, metavar="NAME=PATTERN",
            help="Input of one event source of the spec's sources: section (label join), e.g. "
                 "--events clicks='logs/clicks-*.jsonl' --events dwell='logs/dwell-*.jsonl'. "
                 "Format from the extension.")
        parser.add_argument(
            "--table", action="append", default=None, metavar="NAME=PATTERN",
            help="Input of one side table of the spec's tables: section, overriding its input: key, "
                 "e.g. --table movies='raw/movies.csv'. Format from the extension.")
        parser.add_argument(
            "--max_reject_rate", type=float, default=None,
            help="Fail the run (after writing report.json) when more than this share of input rows "
                 "is rejected. Overrides the spec's pipeline.max_reject_rate.")
        parser.add_argument(
            "--reuse_artifacts", default=None,
            help="Workdir (or its artifacts/ directory) of an earlier run: reuse its vocabularies and "
                 "statistics instead of analyzing this run's train split, e.g. for daily runs that "
                 "must match the served model. Values outside them are counted per feature.")
        parser.add_argument(
            "--batch_rows", type=int, default=BATCH_ROWS,
            help="Rows per Arrow batch carried through validation, split, analysis and writing. "
                 "0 runs the row-at-a-time path instead (one element per row; far slower, the same "
                 "outputs), kept for comparison.")
        parser.add_argument(
            "--workdir", default=None,
            help="Output directory or URI: data/{train,eval}-*.tfrecord.gz, artifacts/, rejected/ "
                 "and report.json are written under it. Earlier outputs there are replaced.")


def infer_input_format(pattern: str) -> str:
    """Guesses the input format from a file pattern's extension.

    Args:
        pattern: str. The input file pattern.

    Raises:
        OptionError: when the extension names no format.
    """
    input_format = format_from_extension(pattern)
    if input_format is not None:
        return input_format
    raise OptionError(
        f"cannot tell the format of input {pattern!r} from its extension; "
        f"pass --input_format ({' or '.join(INPUT_FORMATS)})")


def parse_event_inputs(values, flag: str = "--events", what: str = "source") -> dict[str, str]:
    """``["clicks=logs/c-*.jsonl", ...]`` -> ``{"clicks": "logs/c-*.jsonl"}``.

    Args:
        values: the flag's items, or None.
        flag: str. The flag named in errors (``--events``, ``--table``).
        what: str. What a name names (``source``, ``table``), in errors.

    Raises:
        OptionError: an item without ``=`` or a name given twice.
    """
    inputs: dict[str, str] = {}
    for item in values or ():
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            raise OptionError(f"{flag} expects NAME=PATTERN, got {item!r}")
        if name in inputs:
            raise OptionError(f"{flag} names {what} {name!r} twice")
        inputs[name] = pattern
    return inputs


def parse_table_inputs(values) -> dict[str, str]:
    """``--table`` items: ``["movies=raw/movies.csv"]`` -> ``{"movies": "raw/movies.csv"}``."""
    return parse_event_inputs(values, "--table", "table")
