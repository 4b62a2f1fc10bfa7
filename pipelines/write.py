"""Writers: cleaned rows as tf.Example TFRecords, rejected rows as JSON lines, single files.

Every path goes through Beam's sinks or ``FileSystems``, so the workdir may be any filesystem URI.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes

from feature_specs.spec import Column
from pipelines.files import write_text
from pipelines.records import Rejection

TFRECORD_SUFFIX = ".tfrecord.gz"
REJECTED_SUFFIX = ".jsonl"


def example_from_row(row: Mapping[str, Any], columns: Sequence[Column]) -> bytes:
    """Serializes a validated row as a tf.train.Example holding every column.

    string -> bytes_list (UTF-8), int and timestamp -> int64_list, float -> float_list.

    Args:
        row: ``{column: typed value}`` from validation.
        columns: the spec's ``all_columns``.
    """
    import tensorflow as tf  # imported where used, so building a pipeline does not load TensorFlow

    example = tf.train.Example()
    features = example.features.feature
    for column in columns:
        value = row[column.name]
        if column.dtype == "string":
            features[column.name].bytes_list.value.append(value.encode("utf-8"))
        elif column.dtype == "float":
            features[column.name].float_list.value.append(value)
        else:
            features[column.name].int64_list.value.append(value)
    return example.SerializeToString()


class _EncodeExample(beam.DoFn):
    def __init__(self, columns: Sequence[Column]):
        self._columns = tuple(columns)

    def setup(self):
        import tensorflow  # noqa: F401  (load once per worker, not in the first bundle's timing)

    def process(self, row):
        yield example_from_row(row, self._columns)


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
            | "WriteJsonLines" >> beam.io.WriteToText(self._prefix, file_name_suffix=REJECTED_SUFFIX)
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
