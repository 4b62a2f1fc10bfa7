"""Command-line options of the preprocessing pipeline."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

INPUT_FORMATS = ("csv", "parquet")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz", ".snappy")


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
                 "(.csv, .csv.gz, ... -> csv; .parquet, .pq -> parquet).")
        parser.add_argument(
            "--workdir", default=None,
            help="Output directory or URI: data/{train,eval}-*.tfrecord.gz, artifacts/, rejected/ "
                 "and report.json are written under it. Earlier outputs there are replaced.")


def infer_input_format(pattern: str) -> str:
    """Guesses ``csv`` or ``parquet`` from a file pattern's extension.

    Args:
        pattern: str. The input file pattern.

    Raises:
        ValueError: when the extension names neither format.
    """
    name = pattern.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise ValueError(
        f"cannot tell the format of input {pattern!r} from its extension; "
        f"pass --input_format ({' or '.join(INPUT_FORMATS)})")
