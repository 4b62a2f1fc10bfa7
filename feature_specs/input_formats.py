"""Raw log formats and the rules for reading them that do not depend on a reader: the format a
file name names, its compression, a CSV header, and how one tf.train.Example feature becomes a
value. Plain Python: the pipeline (``pipelines/``), the sampler of ``mmoe spec infer``/``check``
(``feature_specs/sample.py``) and the command line (which must not import Beam) all read these.
"""

from __future__ import annotations

import csv
import math

from feature_specs.errors import UserError

INPUT_FORMATS = ("csv", "parquet", "jsonl", "tfrecord")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz", ".snappy")
# Suffix -> codec of the compressions Beam's CompressionTypes.AUTO detects (and so the pipeline
# decompresses); ``.snappy`` is stripped for the format but names no codec Beam reads.
COMPRESSION_CODECS = {
    ".gz": "gzip", ".bz2": "bz2", ".deflate": "deflate", ".zst": "zstd", ".zstd": "zstd",
    ".xz": "lzma", ".lzma": "lzma",
}
EXTENSIONS = {
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".ndjson", ".json"),
    "tfrecord": (".tfrecord", ".tfrecords"),
}


class InputFileError(UserError, ValueError):
    """An input file cannot be read as its format says (empty, a bad CSV header, a truncated
    Parquet file, columns the spec needs missing); the message names the file and the problem."""


def strip_compression(path: str, suffixes=COMPRESSION_SUFFIXES) -> str:
    """``path`` lower-cased, without one trailing compression suffix from ``suffixes``."""
    name = path.lower()
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def format_from_extension(path: str, suffixes=COMPRESSION_SUFFIXES) -> str | None:
    """The format named by ``path``'s extension (compression suffixes ignored), or None."""
    name = strip_compression(path, suffixes)
    for input_format, extensions in EXTENSIONS.items():
        if name.endswith(extensions):
            return input_format
    return None


def compression_suffix(path: str) -> str | None:
    """The compression suffix ``path`` ends with (one of :data:`COMPRESSION_SUFFIXES`), or None."""
    name = path.lower()
    return next((s for s in COMPRESSION_SUFFIXES if name.endswith(s)), None)


def csv_header(text: str, source: str) -> list[str]:
    """The column names of a CSV header line.

    Args:
        text: str. The file's first line, decoded (a UTF-8 byte order mark removed), no line break.
        source: str. The file, named in errors.

    Raises:
        InputFileError: when the line is not valid CSV, names no column or names a column twice.
    """
    try:
        names = [name.strip() for name in next(csv.reader([text], strict=True), [])]
    except csv.Error as exc:
        raise InputFileError(f"{source}: the header line is not valid CSV: {exc}") from exc
    if not any(names):
        raise InputFileError(f"{source}: the first line must be a header naming the columns, got {text[:200]!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputFileError(f"{source}: the header names column(s) {', '.join(duplicates)} more than once")
    return names


def example_feature_value(feature):
    """One ``tf.train.Feature`` message as a Python value.

    Args:
        feature: a tf.train.Feature (TensorFlow's class, or the one ``feature_specs.example_proto``
            builds without TensorFlow).

    Returns:
        None when it holds no value, the value when it holds one, else a list. bytes stay bytes;
        float32 values become the shortest decimal that round-trips in float32 (0.1, not
        0.100000001), as a CSV of the same data would hold them.
    """
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if kind == "float_list":
        import numpy as np  # only here: the command line imports this module at --help time

        values = [float(str(np.float32(v))) if math.isfinite(v) else v for v in values]
    if not values:
        return None
    return values[0] if len(values) == 1 else values
