"""Checks of the input files before the pipeline starts.

A file that cannot be read as its format says (an empty CSV file, a header that names a column
twice or lacks one the spec needs, a truncated Parquet file) fails the run in seconds with one
:class:`~feature_specs.input_formats.InputFileError` naming the file, instead of a traceback from
inside a Beam worker later. Only each file's header or footer is read, on a few threads.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from feature_specs.csv_records import csv_file_header, text_lines
from feature_specs.input_formats import InputFileError

_CHECK_THREADS = 16
_HEADER_CHUNK_BYTES = 1 << 16
_COLUMNS_SHOWN = 50


def read_csv_header(path: str) -> list[str]:
    """Returns the column names in the first line of one CSV file (any filesystem, any compression).

    Args:
        path: str. One file (not a pattern). Compression is inferred from its extension.

    Raises:
        InputFileError: the file is empty, or its header is not UTF-8, not CSV or names a column twice.
    """
    with FileSystems.open(path) as handle:
        first = next(text_lines(iter(functools.partial(handle.read, _HEADER_CHUNK_BYTES), b"")), None)
    return csv_file_header(first, path)


def read_parquet_columns(path: str) -> list[str]:
    """Returns the column names in one Parquet file's footer.

    Raises:
        InputFileError: the file is not a readable Parquet file (empty, truncated, not Parquet).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return list(pq.ParquetFile(handle).schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(
            f"{path}: not a readable Parquet file ({exc}); is it truncated, or still being written?") from exc


def check_header(header: Sequence[str], required: Sequence[str], source: str) -> None:
    """Fails fast when a file's header lacks required columns (every row would be rejected).

    Args:
        header: the file's column names (a CSV header, a Parquet schema).
        required: the column names the spec needs.
        source: str. The file, named in the error.

    Raises:
        InputFileError: naming the missing columns and the file.
    """
    missing = [name for name in required if name not in header]
    if missing:
        shown = ", ".join(header[:_COLUMNS_SHOWN]) + (f", ... ({len(header):,} in all)" if len(header) > _COLUMNS_SHOWN else "")
        raise InputFileError(
            f"{source}: the file has no column(s) {', '.join(missing)} required by the spec (its columns: {shown})")


def check_input_files(files: Sequence[str], input_format: str, required: Sequence[str]) -> None:
    """Reads every CSV header or Parquet footer and checks it names the ``required`` columns.

    JSONL and TFRecord files have no header to check: their rows are checked one by one.

    Args:
        files: the matched input files.
        input_format: str. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord``.
        required: column names every file must have.

    Raises:
        InputFileError: for the first file (in ``files`` order) that fails, naming it.
    """
    read_columns = {"csv": read_csv_header, "parquet": read_parquet_columns}.get(input_format)
    if read_columns is None or not files:
        return
    with ThreadPoolExecutor(max_workers=min(_CHECK_THREADS, len(files))) as pool:
        for path, columns in zip(files, pool.map(read_columns, files)):
            check_header(columns, required, path)
