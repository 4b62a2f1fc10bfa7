"""Reading raw logs (CSV, Parquet, JSONL, TFRecord of tf.Example) into RawRecord elements.

Files are streamed, never loaded whole. CSV is read by :class:`_CsvSource`, which follows quoting
across lines (a quoted field may hold line breaks; see :mod:`feature_specs.csv_records`); JSONL by
Beam's text source, line by line; Parquet and TFRecord by Beam's own sources. A CSV record, JSONL
line or serialized Example that cannot be parsed is not dropped: it becomes a record without
values, which validation rejects as ``unparseable_line``.
"""

from __future__ import annotations

import functools
import json
from typing import Sequence

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filebasedsource import FileBasedSource
from apache_beam.io.parquetio import ReadAllFromParquet
from apache_beam.io.tfrecordio import ReadAllFromTFRecord
from apache_beam.metrics import Metrics

from feature_specs.csv_records import (MAX_CSV_RECORD_BYTES, CsvRecord, csv_file_header, csv_records,
                                       parse_csv_record, text_lines)
from feature_specs.example_proto import Example  # protobuf alone: workers never import TensorFlow
from feature_specs.input_formats import example_feature_value
from pipelines.options import INPUT_FORMATS, OptionError
from pipelines.records import RawRecord

CHUNK_BYTES = 1 << 16


def raw_csv_record(source: str, record: CsvRecord, header: Sequence[str]) -> RawRecord:
    """A parsed CSV record as a RawRecord: values by header name, or the parse error."""
    if record.fields is None:
        return RawRecord(source, record.text, None, record.error)
    return RawRecord(source, record.text, dict(zip(header, record.fields)))


def parse_csv_line(source: str, line: bytes | str, header: Sequence[str]) -> RawRecord:
    """Splits one CSV record into named values.

    Args:
        source: str. The file the record came from.
        line: the record without its final line break (line breaks only inside quoted fields),
            as bytes (UTF-8) or str.
        header: the file's column names.

    Returns:
        A record with ``values`` set, or with ``values=None`` and ``error`` saying why the record
        does not parse (invalid UTF-8, broken quoting, wrong number of fields).
    """
    return raw_csv_record(source, parse_csv_record(line, len(header), source), header)


class _CsvSource(FileBasedSource):
    """The records of CSV files, each file's first line its header, quoting followed across lines.

    A file is read whole by one worker, from its start: where a record begins cannot be told from
    an arbitrary offset once quoted fields may hold line breaks, so files are not split (a
    pattern of many files still reads in parallel, one file per bundle). Reading holds one record
    at a time, at most ``max_record_bytes`` for one that spans lines.

    Args:
        pattern: str. File pattern, local or any Beam filesystem URI; compression from the extension.
        max_record_bytes: int. How far an open quote may run (see :func:`feature_specs.csv_records.csv_records`).
    """

    def __init__(self, pattern: str, max_record_bytes: int = MAX_CSV_RECORD_BYTES):
        super().__init__(pattern, splittable=False)
        self._max_record_bytes = max_record_bytes

    def read_records(self, file_name, offset_range_tracker):
        if not offset_range_tracker.try_claim(offset_range_tracker.start_position()):
            return
        blank = Metrics.counter("pipelines.read", "blank_lines_skipped")
        with self.open_file(file_name) as handle:
            lines = text_lines(iter(functools.partial(handle.read, CHUNK_BYTES), b""))
            header = csv_file_header(next(lines, None), file_name)
            for record in csv_records(lines, len(header), file_name, self._max_record_bytes):
                if record.blank:
                    blank.inc()
                    continue
                yield raw_csv_record(file_name, record, header)


def _decode_line(source: str, line: bytes | str) -> str | RawRecord:
    """The line as text, or a rejected record when its bytes are not valid UTF-8."""
    if not isinstance(line, bytes):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = line.decode("utf-8", errors="backslashreplace")
        return RawRecord(source, text, None, f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})")


def parse_json_line(source: str, line: bytes | str) -> RawRecord:
    """Parses one JSONL line, which must hold a JSON object ``{column: value}``.

    ``NaN``/``Infinity`` literals are read as floats so that validation rejects them as
    ``not_finite`` rather than as unparseable.

    Returns:
        A record with ``values``, or with ``values=None`` and ``error`` saying why.
    """
    line = _decode_line(source, line)
    if isinstance(line, RawRecord):
        return line
    try:
        values = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        return RawRecord(source, line, None, f"line is not valid JSON ({exc})")
    if not isinstance(values, dict):
        return RawRecord(source, line, None, f"line holds a JSON {type(values).__name__}, not an object")
    return RawRecord(source, line, values)


def parse_example(source: str, serialized: bytes) -> RawRecord:
    """Parses one serialized tf.train.Example into ``{feature name: value}``.

    bytes features stay bytes (validation decodes UTF-8), a feature with several values becomes a
    list (rejected as ``wrong_type`` for the spec's scalar columns), an empty one is missing.
    """
    from google.protobuf.message import DecodeError

    example = Example()
    try:
        example.ParseFromString(serialized)
    except DecodeError as exc:
        return RawRecord(source, serialized, None, f"record is not a serialized tf.train.Example ({exc})")
    values = {name: example_feature_value(feature) for name, feature in example.features.feature.items()}
    return RawRecord(source, values, values)


class _ParseJsonLines(beam.DoFn):
    """Parses ``(file, line)`` pairs of JSONL files, skipping blank lines."""

    def __init__(self):
        self._blank = Metrics.counter("pipelines.read", "blank_lines_skipped")

    def process(self, element):
        source, line = element
        if not line.strip():
            self._blank.inc()
            return
        yield parse_json_line(source, line)


class ReadRecords(beam.PTransform):
    """Reads every file matching a pattern into :class:`RawRecord` elements.

    Args:
        pattern: str. File pattern, local or any Beam filesystem URI.
        input_format: str. ``csv`` (first line of each file is its header; quoted fields may
            hold line breaks), ``parquet``, ``jsonl`` (one JSON object per line) or ``tfrecord``
            (serialized tf.train.Example records); compression from the extension.
    """

    def __init__(self, pattern: str, input_format: str):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise OptionError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
        self._pattern = pattern
        self._format = input_format

    def expand(self, pbegin):
        if self._format == "csv":
            return pbegin | "ReadCsv" >> beam.io.Read(_CsvSource(self._pattern))
        if self._format == "jsonl":
            return (
                pbegin
                | "ReadLines" >> beam.io.ReadFromTextWithFilename(self._pattern, coder=coders.BytesCoder())
                | "ParseJson" >> beam.ParDo(_ParseJsonLines())
            )
        if self._format == "tfrecord":
            return (
                pbegin
                | "Pattern" >> beam.Create([self._pattern])
                | "ReadTFRecord" >> ReadAllFromTFRecord(with_filename=True)
                | "ParseExamples" >> beam.MapTuple(parse_example)
            )
        return (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "ReadParquet" >> ReadAllFromParquet(with_filename=True)
            | "ToRecords" >> beam.MapTuple(lambda source, row: RawRecord(source, row, row))
        )
