"""Writers: cleaned rows as tf.Example TFRecords, rejected rows as JSON lines, single files.

Every path goes through Beam's sinks or ``FileSystems``, so the workdir may be any filesystem URI.
"""

from __future__ import annotations

import gzip
import struct
from typing import Any, Mapping, Sequence

import apache_beam as beam
import google_crc32c
from apache_beam import coders
from apache_beam.io import iobase
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from feature_specs.spec import Column
from pipelines.files import write_text
from pipelines.records import Rejection

TFRECORD_SUFFIX = ".tfrecord.gz"
GZIP_LEVEL = 1
REJECTED_SUFFIX = ".jsonl"


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values as their 64-bit two's complement."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature_key(name: str) -> bytes:
    return _field(1, name.encode("utf-8"))


def example_from_row(row: Mapping[str, Any], columns: Sequence[Column],
                     keys: Sequence[bytes] | None = None) -> bytes:
    """Serializes a validated row as a tf.train.Example holding every column.

    string -> bytes_list (UTF-8), int and timestamp -> int64_list, float -> float_list (float32);
    a list column -> one bytes_list / int64_list of all its elements (any number, none included).
    The protobuf wire format is written directly (``Example{features{feature: map<string,
    Feature>}}``), so the pipeline's workers never import TensorFlow: that saves seconds of
    start-up and hundreds of MB per worker process. Tests parse the bytes with TensorFlow.

    Args:
        row: ``{column: typed value}`` from validation.
        columns: the spec's ``all_columns``.
        keys: the encoded map keys of ``columns`` (``_feature_key``), precomputed by callers that
            encode many rows.
    """
    keys = keys or [_feature_key(c.name) for c in columns]
    entries = []
    for column, key in zip(columns, keys):
        value = row[column.name]
        if column.list is not None:
            feature = list_feature(column.dtype, value)
        elif column.dtype == "string":
            feature = _field(1, _field(1, value.encode("utf-8")))  # Feature.bytes_list.value
        elif column.dtype == "float":
            feature = _field(2, _field(1, struct.pack("<f", value)))  # Feature.float_list.value, packed
        else:
            feature = _field(3, _field(1, _varint(value)))  # Feature.int64_list.value, packed
        entries.append(_field(1, key + _field(2, feature)))  # Features.feature map entry
    return _field(1, b"".join(entries))  # Example.features


def list_feature(dtype: str, values: Sequence[Any]) -> bytes:
    """The ``tf.train.Feature`` of a list: ``bytes_list`` with one value per string element, or
    ``int64_list`` with the elements packed (an empty packed field for the empty list, so the
    Feature always says its kind).

    Args:
        dtype: str. The elements' type, ``string`` or ``int``.
        values: the typed elements.
    """
    if dtype == "string":
        return _field(1, b"".join(_field(1, v.encode("utf-8")) for v in values))  # Feature.bytes_list
    return _field(3, _field(1, b"".join(_varint(v) for v in values)))  # Feature.int64_list, packed


class _EncodeExample(beam.DoFn):
    def __init__(self, columns: Sequence[Column]):
        self._columns = tuple(columns)
        self._keys = tuple(_feature_key(c.name) for c in self._columns)

    def process(self, row):
        yield example_from_row(row, self._columns, self._keys)


class WriteExamples(beam.PTransform):
    """Writes validated rows as GZIP TFRecord shards ``<prefix>-SSSSS-of-NNNNN.tfrecord.gz``.

    Args:
        prefix: str. Shard prefix, e.g. ``Workdir.split_prefix('train')``.
        columns: the spec's ``all_columns``; every one is present in every Example.
    """

    def __init__(self, prefix: str, columns: Sequence[Column]):
        super().__init__()
        self._prefix = prefix
        self._columns = tuple(columns)

    def expand(self, rows):
        return (
            rows
            | "Encode" >> beam.ParDo(_EncodeExample(self._columns))
            | "WriteTFRecord" >> beam.io.WriteToTFRecord(
                self._prefix, file_name_suffix=TFRECORD_SUFFIX,
                compression_type=CompressionTypes.GZIP)
        )


class _ContentNamedWriter(iobase.Writer):
    """Wraps a sink's shard writer; when closed, renames its temporary file after its first
    element's CRC-32C and length. Beam numbers the shards in the sorted order of those names
    (otherwise random ids), so on parallel bundles (threads, worker processes) the same rows land
    in the same shard file on every run, and training, which reads the shards in name order,
    sees them in the same order."""

    def __init__(self, writer: iobase.Writer):
        self._writer = writer
        self._first: bytes | str | None = None

    def write(self, value):
        if self._first is None:
            self._first = value
        self._writer.write(value)

    def at_capacity(self):
        return self._writer.at_capacity()

    def close(self):
        path = self._writer.close()
        first = self._first or b""
        first = first if isinstance(first, bytes) else str(first).encode("utf-8")
        folder, name = FileSystems.split(path)
        named = FileSystems.join(folder, f"{google_crc32c.value(first):08x}-{len(first):012d}-{name}")
        FileSystems.rename([path], [named])
        return named


class _ContentNamedSink(FileBasedSink):
    """A file sink whose shards are numbered by content (:class:`_ContentNamedWriter`)."""

    def open_writer(self, init_result, uid):
        return _ContentNamedWriter(super().open_writer(init_result, uid))


class _FramedRecordsSink(_ContentNamedSink):
    """GZIP TFRecord shards whose elements are already-framed runs of records (bytes), numbered
    by content.

    Compressed at :data:`GZIP_LEVEL` (Beam's own GZIP files use zlib's default, 6): a third of
    the CPU time for files about a fifth larger, read by every GZIP reader the same way.
    """

    def __init__(self, prefix: str):
        super().__init__(prefix, coder=coders.BytesCoder(), file_name_suffix=TFRECORD_SUFFIX,
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def open(self, temp_path):
        return gzip.GzipFile(fileobj=super().open(temp_path), mode="wb", compresslevel=GZIP_LEVEL, mtime=0)

    def close(self, file_handle):
        raw = file_handle.fileobj
        file_handle.close()  # writes the GZIP trailer; does not close the file it wraps
        raw.close()

    def write_encoded_record(self, file_handle, encoded_value):
        file_handle.write(encoded_value)


class _EncodeTable(beam.DoFn):
    def __init__(self, columns: Sequence[Column]):
        self._columns = tuple(columns)

    def process(self, table):
        from pipelines.example_encoding import encode_examples
        from pipelines.tfrecord import frame_records

        yield frame_records(encode_examples(table, self._columns))


class WriteExampleBatches(beam.PTransform):
    """:class:`WriteExamples` for tables of validated rows: each table is encoded and framed at
    once (:mod:`pipelines.example_encoding`, :mod:`pipelines.tfrecord`), with the same Example
    bytes and the same shards ``<prefix>-SSSSS-of-NNNNN.tfrecord.gz``.

    Args:
        prefix: str. Shard prefix, e.g. ``Workdir.split_prefix('train')``.
        columns: the spec's ``all_columns``.
    """

    def __init__(self, prefix: str, columns: Sequence[Column]):
        super().__init__()
        self._prefix = prefix
        self._columns = tuple(columns)

    def expand(self, tables):
        return (
            tables
            | "Encode" >> beam.ParDo(_EncodeTable(self._columns))
            | "WriteTFRecord" >> beam.io.Write(_FramedRecordsSink(self._prefix))
        )


class _JsonLinesSink(_ContentNamedSink):
    """Text shards of one JSON document per line, numbered by content."""

    def __init__(self, prefix: str):
        super().__init__(prefix, coder=coders.StrUtf8Coder(), file_name_suffix=REJECTED_SUFFIX)

    def write_encoded_record(self, file_handle, encoded_value):
        file_handle.write(encoded_value + b"\n")


class WriteRejected(beam.PTransform):
    """Writes rejections as JSON lines to ``<prefix>-SSSSS-of-NNNNN.jsonl``.

    Each line is ``{"source", "row", "reason", "field", "message"}`` with ``row`` the raw row
    unchanged (the CSV line, or the Parquet row as JSON-safe data).

    Args:
        prefix: str. Shard prefix, e.g. ``Workdir.rejected_prefix``.
    """

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def expand(self, rejections):
        return (
            rejections
            | "ToJson" >> beam.Map(Rejection.to_json)
            | "WriteJsonLines" >> beam.io.Write(_JsonLinesSink(self._prefix))
        )


def vocabulary_text(values: Sequence[Any]) -> str:
    """A vocabulary file's contents: one value per line, in the given order ('' when empty)."""
    return "".join(f"{value}\n" for value in values)


class _WriteFile(beam.DoFn):
    def process(self, element):
        path, text = element
        write_text(path, text)
        yield path


class WriteFiles(beam.PTransform):
    """Writes ``(path, text)`` elements, each as one whole file, so the text's order is kept.

    Returns (from ``expand``):
        The written paths.
    """

    def expand(self, files):
        return files | "Write" >> beam.ParDo(_WriteFile())
