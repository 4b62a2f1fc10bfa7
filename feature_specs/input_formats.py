"""Raw log formats and how a file name tells them apart. Plain Python: the pipeline, `mmoe spec`
and the command line (which must not import Beam) all read the same table."""

from __future__ import annotations

INPUT_FORMATS = ("csv", "parquet", "jsonl", "tfrecord")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz", ".snappy")
EXTENSIONS = {
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".ndjson", ".json"),
    "tfrecord": (".tfrecord", ".tfrecords"),
}


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
