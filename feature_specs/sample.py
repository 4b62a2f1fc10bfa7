"""The one sampler of raw logs: the first rows of a file or glob, read as the pipeline reads them.

``mmoe spec infer`` (:mod:`feature_specs.infer`) and ``mmoe spec check`` (:mod:`feature_specs.check`)
both call :func:`read_sample`. It follows the pipeline's rules (``pipelines/read.py``,
``pipelines/options.py``), taking the shared ones from :mod:`feature_specs.input_formats`:

* the format from the extension, after one compression suffix (``.gz``, ``.bz2``, ``.zst``,
  ``.zstd``, ``.deflate``, ``.xz``, ``.lzma``), which names how text and TFRecord files are
  decompressed (Parquet compresses inside the file);
* CSV: the first line of every file is its header (UTF-8, a byte order mark dropped; no column
  named twice); records as :func:`feature_specs.csv_records.csv_records` finds them (a quoted
  field may hold line breaks), blank ones skipped; JSONL: lines split on ``\\n`` (a trailing
  ``\\r`` dropped), blank ones skipped;
* a CSV record that is not valid UTF-8 or CSV, or holds another number of fields than the
  header, and a JSONL line that is not UTF-8 or does not hold a JSON object, are counted as
  unparsed (the pipeline rejects them as ``unparseable_line``);
* TFRecord: serialized tf.train.Example records, each feature a value by
  :func:`~feature_specs.input_formats.example_feature_value`.

Only the first ``max_rows`` rows are read; nothing loads a whole file. :func:`read_column`
streams one column of every row (Parquet reads only that column), for what the first rows cannot
say: where a time cut falls in the whole log.
"""

from __future__ import annotations

import bz2
import difflib
import fnmatch
import json
import lzma
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from feature_specs.csv_records import csv_file_header, csv_records, text_lines, without_cr
from feature_specs.errors import UserError
from feature_specs.input_formats import (
    COMPRESSION_CODECS,
    INPUT_FORMATS,
    InputFileError,
    compression_suffix,
    example_feature_value,
    format_from_extension,
    strip_compression,
)

SAMPLE_ROWS = 20_000
COLUMN_SCAN_ROWS = 10_000_000  # read_column stops after this many rows
_CHUNK_BYTES = 1 << 16


class InferError(UserError, ValueError):
    """The data cannot be sampled, or turned into a spec as asked; the message names the column
    or the file."""


@dataclass
class Sample:
    """The first rows of a data set, as read.

    Args:
        path: str. The file or glob pattern given.
        files: list of str. The files matched, in the order read.
        input_format: str. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord``.
        columns: list of str. Column names in file order (JSONL, TFRecord: in order of first
            appearance).
        rows: list of dict ``{column: raw value}``: CSV values are str, the other formats' values
            keep their types (TFRecord: bytes, int, float, or a list for several values).
        unparsed_lines: int. Lines (records) that did not parse; the pipeline rejects them.
        exhausted: bool. Every row of every file was read (the sample is the whole data set).
    """

    path: str
    files: list[str]
    input_format: str
    columns: list[str]
    rows: list[dict]
    unparsed_lines: int = 0
    exhausted: bool = False

    def add_columns(self, names: Iterable[str]) -> None:
        """Appends the names not seen yet to :attr:`columns`."""
        for name in names:
            if name not in self.columns:
                self.columns.append(name)


def did_you_mean(name: str, columns: list[str]) -> str:
    """`` (did you mean 'x'?)`` naming the column closest to ``name``, or an empty string."""
    close = difflib.get_close_matches(name, columns, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def input_format_of(path: str) -> str:
    """The format of ``path`` from its extension, as ``pipelines.options.infer_input_format``.

    Raises:
        InferError: for an extension that names no supported format.
    """
    input_format = format_from_extension(path)
    if input_format is not None:
        return input_format
    name = strip_compression(path)
    raise InferError(
        f"{path}: unsupported format (extension {os.path.splitext(name)[1] or 'none'}); `mmoe spec` reads "
        "CSV (.csv, with a header line), Parquet (.parquet, .pq), JSONL (.jsonl, .ndjson, .json) or TFRecord "
        "of tf.train.Example (.tfrecord, .tfrecords), text and TFRecord optionally compressed "
        "(.gz, .bz2, .zst, .deflate, .xz)")


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it (local paths, or URIs pyarrow supports)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def match_files(path: str) -> tuple[pafs.FileSystem, list[str]]:
    """The files a path or glob pattern (wildcards in the last component) names, sorted.

    Raises:
        InferError: when nothing matches.
    """
    filesystem, inner = _filesystem(path)
    directory, base = os.path.split(inner)
    if any(ch in base for ch in "*?["):
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except OSError as exc:
            raise InferError(f"{path}: cannot list {directory}: {exc}") from exc
        files = sorted(i.path for i in infos
                       if i.type == pafs.FileType.File and fnmatch.fnmatch(os.path.basename(i.path), base))
    else:
        info = filesystem.get_file_info(inner)
        files = [inner] if info.type == pafs.FileType.File else []
    if not files:
        raise InferError(f"{path}: no such file")
    return filesystem, files


def _decompressor(codec: str):
    """A fresh streaming decompressor (``decompress``, ``eof``, ``unused_data``) for ``codec``."""
    if codec == "zstd":
        import zstandard  # installed with Apache Beam, which reads .zst the same way

        return zstandard.ZstdDecompressor().decompressobj()
    return {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "deflate": zlib.decompressobj,
            "bz2": bz2.BZ2Decompressor, "lzma": lzma.LZMADecompressor}[codec]()


def _file_bytes(filesystem: pafs.FileSystem, path: str) -> Iterator[bytes]:
    """The bytes of a file in chunks, decompressed as its suffix says (concatenated members too).

    Raises:
        InferError: for a compression suffix the pipeline cannot read (``.snappy``).
    """
    suffix = compression_suffix(path)
    if suffix is not None and suffix not in COMPRESSION_CODECS:
        raise InferError(f"{path}: {suffix} compression is not read by the pipeline; decompress the file first")
    codec = COMPRESSION_CODECS.get(suffix)
    with filesystem.open_input_stream(path, compression=None) as stream:
        if codec is None:
            while chunk := stream.read(_CHUNK_BYTES):
                yield chunk
            return
        decompressor = _decompressor(codec)
        while chunk := stream.read(_CHUNK_BYTES):
            while chunk:
                yield decompressor.decompress(chunk)
                if not decompressor.eof:
                    break
                chunk = decompressor.unused_data  # the next member of concatenated gzip/bz2 files
                decompressor = _decompressor(codec)


def _csv_rows(lines: Iterator[bytes], path: str, sample: Sample) -> Iterator[dict]:
    try:
        header = csv_file_header(next(lines, None), path)
    except InputFileError as exc:
        raise InferError(str(exc)) from exc
    sample.add_columns(header)
    for record in csv_records(lines, len(header), path):
        if record.blank:
            continue
        if record.fields is None:
            sample.unparsed_lines += 1
            continue
        yield dict(zip(header, record.fields))


def _jsonl_rows(lines: Iterator[bytes], sample: Sample) -> Iterator[dict]:
    for line in map(without_cr, lines):
        if not line.strip():
            continue
        try:
            values = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            values = None
        if not isinstance(values, dict):
            sample.unparsed_lines += 1
            continue
        sample.add_columns(values)
        yield values


def _records(chunks: Iterable[bytes], path: str) -> Iterator[bytes]:
    """The records of a TFRecord file: each a little-endian uint64 length, its 4-byte CRC, the
    data and the data's 4-byte CRC (the CRCs are not checked)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        while len(pending) >= 12:
            (length,) = struct.unpack("<Q", pending[:8])
            if len(pending) < 16 + length:
                break
            yield pending[12:12 + length]
            pending = pending[16 + length:]
    if pending:
        raise InferError(f"{path}: the file ends inside a TFRecord record (truncated?)")


def _tfrecord_rows(chunks: Iterable[bytes], path: str, sample: Sample) -> Iterator[dict]:
    from google.protobuf.message import DecodeError

    from feature_specs.example_proto import Example

    for record in _records(chunks, path):
        example = Example()
        try:
            example.ParseFromString(record)
        except DecodeError:
            sample.unparsed_lines += 1
            continue
        values = {name: example_feature_value(feature) for name, feature in example.features.feature.items()}
        sample.add_columns(values)
        yield values


def _parquet_rows(filesystem: pafs.FileSystem, path: str, sample: Sample, max_rows: int) -> Iterator[dict]:
    with filesystem.open_input_file(path) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowException as exc:
            raise InferError(f"{path}: not a readable Parquet file ({exc}); is it truncated?") from exc
        sample.add_columns(parquet.schema_arrow.names)
        for batch in parquet.iter_batches(batch_size=min(max_rows, 8192)):
            yield from batch.to_pylist()


def _file_rows(filesystem: pafs.FileSystem, path: str, sample: Sample, max_rows: int) -> Iterator[dict]:
    """The rows of one file of ``sample.input_format``, columns and unparsed lines counted into ``sample``."""
    if sample.input_format == "parquet":
        return _parquet_rows(filesystem, path, sample, max_rows)
    chunks = _file_bytes(filesystem, path)
    if sample.input_format == "tfrecord":
        return _tfrecord_rows(chunks, path, sample)
    if sample.input_format == "csv":
        return _csv_rows(text_lines(chunks), path, sample)
    return _jsonl_rows(text_lines(chunks), sample)


def read_sample(path: str, max_rows: int = SAMPLE_ROWS, input_format: str | None = None) -> Sample:
    """Reads at most ``max_rows`` rows of a file or glob, streaming.

    Args:
        path: str. A local path, a glob (``logs/part-*.parquet``) or a URI pyarrow can open.
        max_rows: int. Rows to read at most.
        input_format: str or None. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord``; None: from the
            extension.

    Returns:
        Sample: the rows read, the files matched and the columns seen.

    Raises:
        InferError: unsupported format, no such file, an empty file or no rows at all.
    """
    if max_rows < 1:
        raise InferError(f"max_rows must be >= 1, got {max_rows}")
    fmt = input_format or input_format_of(path)
    if fmt not in INPUT_FORMATS:
        raise InferError(f"{path}: unsupported format {fmt!r}; expected one of {', '.join(INPUT_FORMATS)}")
    filesystem, files = match_files(path)
    sample = Sample(path=path, files=[], input_format=fmt, columns=[], rows=[])
    for file in files:
        sample.files.append(file)
        for row in _file_rows(filesystem, file, sample, max_rows):
            if len(sample.rows) >= max_rows:
                return sample
            sample.rows.append(row)
    sample.exhausted = True
    if not sample.rows:
        where = files[0] if len(files) == 1 else f"{path} ({len(files)} files)"
        raise InferError(f"{where}: empty file: no data rows" + (
            f" ({sample.unparsed_lines} line(s) did not parse)" if sample.unparsed_lines else ""))
    return sample


def read_column(path: str, column: str, input_format: str | None = None, convert=lambda value: value,
                max_rows: int = COLUMN_SCAN_ROWS) -> tuple[list, bool]:
    """One column of every row of a file or glob, streaming, each raw value through ``convert``.

    Args:
        path: str. As :func:`read_sample`.
        column: str. The column; rows without it give ``convert(None)``.
        input_format: str or None. As :func:`read_sample`.
        convert: callable raw value -> what to keep (a float keeps memory small).
        max_rows: int. Rows read at most.

    Returns:
        (values, exhausted): the converted values in file order, and whether every row was read.
    """
    fmt = input_format or input_format_of(path)
    filesystem, files = match_files(path)
    sample = Sample(path=path, files=[], input_format=fmt, columns=[], rows=[])
    values: list = []
    for file in files:
        if fmt == "parquet":
            with filesystem.open_input_file(file) as handle:
                parquet = pq.ParquetFile(handle)
                if column not in parquet.schema_arrow.names:
                    chunks: Iterable = [[None] * parquet.metadata.num_rows]
                else:
                    chunks = (batch.column(0).to_pylist() for batch in parquet.iter_batches(columns=[column]))
                for chunk in chunks:
                    for value in chunk:
                        if len(values) >= max_rows:
                            return values, False
                        values.append(convert(value))
            continue
        for row in _file_rows(filesystem, file, sample, max_rows):
            if len(values) >= max_rows:
                return values, False
            values.append(convert(row.get(column)))
    return values, True
