"""Reading raw logs (CSV, Parquet, JSONL, TFRecord of tf.Example) into RawRecord elements.

Files are streamed by Beam's sources, never loaded whole. A CSV or JSONL line or a serialized
Example that cannot be parsed is not dropped: it becomes a record without values, which validation
rejects as ``unparseable_line``.
"""

from __future__ import annotations

import csv
import json
from typing import Sequence

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquet
from apache_beam.io.tfrecordio import ReadAllFromTFRecord
from apache_beam.metrics import Metrics

from feature_specs.example_proto import Example  # protobuf alone: workers never import TensorFlow
from feature_specs.input_formats import csv_header, example_feature_value
from pipelines.options import INPUT_FORMATS
from pipelines.records import RawRecord


def read_csv_header(path: str) -> list[str]:
    """Returns the column names in the first line of one CSV file (any filesystem, any compression).

    Args:
        path: str. One file (not a pattern). Compression is inferred from its extension.

    Raises:
        ValueError: when the header is empty, not valid CSV or names a column twice.
    """
    with FileSystems.open(path) as handle:
        first = handle.readline()
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: the header line is not valid UTF-8: {exc}") from exc
    return csv_header(text, path)


def _decode_line(source: str, line: bytes | str) -> str | RawRecord:
    """The line as text, or a rejected record when its bytes are not valid UTF-8."""
    if not isinstance(line, bytes):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = line.decode("utf-8", errors="backslashreplace")
        return RawRecord(source, text, None, f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})")


def parse_csv_line(source: str, line: bytes | str, header: Sequence[str]) -> RawRecord:
    """Splits one CSV line into named values.

    Args:
        source: str. The file the line came from.
        line: the line without its line break, as bytes (UTF-8) or str.
        header: the file's column names.

    Returns:
        A record with ``values`` set, or with ``values=None`` and ``error`` saying why the line does
        not parse (invalid UTF-8, broken quoting, wrong number of fields).
    """
    line = _decode_line(source, line)
    if isinstance(line, RawRecord):
        return line
    try:
        fields = next(csv.reader([line], strict=True), [])
    except csv.Error as exc:
        return RawRecord(source, line, None, f"line is not valid CSV ({exc})")
    if len(fields) != len(header):
        return RawRecord(
            source, line, None,
            f"line has {len(fields)} field(s), the header of {source} names {len(header)}")
    return RawRecord(source, line, dict(zip(header, fields)))


class _ParseCsvLines(beam.DoFn):
    """Parses ``(file, line)`` pairs using each file's own header, read once per file and worker."""

    def __init__(self):
        self._blank = Metrics.counter("pipelines.read", "blank_lines_skipped")

    def setup(self):
        self._headers: dict[str, list[str]] = {}

    def process(self, element):
        source, line = element
        if not line.strip():
            # Like csv.DictReader, a blank line holds no row.
            self._blank.inc()
            return
        if source not in self._headers:
            self._headers[source] = read_csv_header(source)
        yield parse_csv_line(source, line, self._headers[source])


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
        input_format: str. ``csv`` (first line of each file is its header), ``parquet``, ``jsonl``
            (one JSON object per line) or ``tfrecord`` (serialized tf.train.Example records;
            compression from the extension).
    """

    def __init__(self, pattern: str, input_format: str):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
        self._pattern = pattern
        self._format = input_format

    def expand(self, pbegin):
        if self._format == "csv":
            return (
                pbegin
                | "ReadLines" >> beam.io.ReadFromTextWithFilename(
                    self._pattern, skip_header_lines=1, coder=coders.BytesCoder())
                | "ParseCsv" >> beam.ParDo(_ParseCsvLines())
            )
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


def check_header(header: Sequence[str], required: Sequence[str], source: str) -> None:
    """Fails fast when a file's header lacks required columns (every row would be rejected).

    Raises:
        ValueError: naming the missing columns and the file.
    """
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(
            f"{source}: the header has no column(s) {', '.join(missing)} required by the spec "
            f"(header: {', '.join(header)})")
