"""Reading raw logs as :class:`~pipelines.batches.RawBatch` elements, a block of rows at a time.

The pattern is matched with Beam's FileSystems and the files are spread over the workers (one
file per element after a reshuffle); each file is streamed in blocks of about ``batch_rows`` rows:

- Parquet: Arrow record batches straight from the file (``pyarrow.parquet.ParquetFile.iter_batches``);
- CSV: blocks of lines. A block whose lines hold no quote character is parsed by pyarrow's CSV
  reader, every column as text; a block with quotes, blank lines, bad UTF-8 or a row of the wrong
  width is parsed line by line with the row reader's rules (:mod:`feature_specs.csv_records`),
  so those rows are rejected with the same reasons. From the first line that opens a quoted field
  (an odd number of ``"``), the rest of the file is read by the row reader, which follows quoting
  across lines within :data:`~feature_specs.csv_records.MAX_CSV_RECORD_BYTES`;
- JSONL: blocks of lines, each parsed by :func:`pipelines.read.parse_json_line`;
- TFRecord: records read and checksummed by :mod:`pipelines.tfrecord` and parsed with the protobuf
  classes of :mod:`feature_specs.example_proto`: TensorFlow is never imported.

Each worker logs its progress (rows read, rows/s) every :data:`PROGRESS_SECONDS`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from feature_specs.csv_records import (MAX_CSV_RECORD_BYTES, csv_file_header, csv_records, parse_csv_record,
                                       text_lines, without_cr)
from pipelines.batches import RawBatch
from pipelines.options import BATCH_ROWS, INPUT_FORMATS, OptionError
from pipelines.read import CHUNK_BYTES, parse_example, parse_json_line, raw_csv_record
from pipelines.tfrecord import read_records

PROGRESS_SECONDS = 10.0
_QUOTE = b'"'

logger = logging.getLogger(__name__)


class _Progress:
    """Counts the rows one reader has read and logs them with the rate, at most every ``every`` s."""

    def __init__(self, every: float = PROGRESS_SECONDS):
        self._every = every
        self._start = self._last = time.monotonic()
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            logger.info("preprocess: read %s rows (%s rows/s) in this worker", f"{self.rows:,}",
                        f"{self.rows / (now - self._start):,.0f}")


def _pyarrow_block(source: str, header: list[str], lines: list[bytes]) -> RawBatch | None:
    """A quote-free block parsed by pyarrow (every column as text), or None where its rows would
    not be exactly the row reader's (blank lines, a lone ``\\r``, bad UTF-8, a row of another width)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if len(header) < 2 or not all(lines):
        return None
    data = b"\n".join(lines)
    if data.count(b"\r") != data.count(b"\r\n") + (1 if data.endswith(b"\r") else 0):
        return None
    invalid = []
    try:
        table = pcsv.read_csv(
            pa.py_buffer(data),
            read_options=pcsv.ReadOptions(column_names=header, block_size=len(data) + 1, use_threads=False),
            parse_options=pcsv.ParseOptions(quote_char=False, invalid_row_handler=lambda row: invalid.append(row) or "skip"),
            convert_options=pcsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                strings_can_be_null=False, null_values=[]))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if invalid or table.num_rows != len(lines):
        return None
    texts = [without_cr(line).decode("utf-8") for line in lines]
    if any(not text.strip() for text in texts):
        return None
    return RawBatch(source, table=table, lines=texts)


def _row_block(source: str, header: list[str], lines: list[bytes], blank) -> RawBatch:
    """A block of single-line records parsed one by one with the row reader's rules."""
    records = []
    for line in lines:
        record = parse_csv_record(without_cr(line), len(header), source)
        if record.blank:
            blank.inc()
            continue
        records.append(raw_csv_record(source, record, header))
    return RawBatch(source, records=records)


def _csv_batches(handle, source: str, batch_rows: int, blank):
    lines = text_lines(iter(functools.partial(handle.read, CHUNK_BYTES), b""))
    header = csv_file_header(next(lines, None), source)
    while block := list(itertools.islice(lines, batch_rows)):
        opens = next((i for i, line in enumerate(block) if line.count(_QUOTE) % 2), None)
        simple = block if opens is None else block[:opens]
        if simple:
            quoted = any(_QUOTE in line for line in simple)
            yield (None if quoted else _pyarrow_block(source, header, simple)) or _row_block(source, header, simple, blank)
        if opens is not None:
            rest = _unblank(csv_records(itertools.chain(block[opens:], lines), len(header), source,
                                        MAX_CSV_RECORD_BYTES), blank)
            while chunk := list(itertools.islice(rest, batch_rows)):
                yield RawBatch(source, records=[raw_csv_record(source, r, header) for r in chunk])
            return


def _unblank(records, blank):
    """The records that are not blank, counting the blank ones."""
    for record in records:
        if record.blank:
            blank.inc()
        else:
            yield record


def _jsonl_batches(handle, source: str, batch_rows: int, blank):
    lines = (without_cr(line) for line in text_lines(iter(functools.partial(handle.read, CHUNK_BYTES), b"")))
    while block := list(itertools.islice(lines, batch_rows)):
        records = []
        for line in block:
            if not line.strip():
                blank.inc()
                continue
            records.append(parse_json_line(source, line))
        yield RawBatch(source, records=records)


def _tfrecord_batches(handle, source: str, batch_rows: int, blank):
    examples = read_records(handle, source)
    while block := list(itertools.islice(examples, batch_rows)):
        yield RawBatch(source, records=[parse_example(source, data) for data in block])


def _parquet_batches(path: str, batch_rows: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
            yield RawBatch(path, table=pa.Table.from_batches([batch]))


_STREAM_READERS = {"csv": _csv_batches, "jsonl": _jsonl_batches, "tfrecord": _tfrecord_batches}


class _ReadFileBatches(beam.DoFn):
    """One file path -> its RawBatch elements (empty batches dropped)."""

    def __init__(self, input_format: str, batch_rows: int):
        self._format = input_format
        self._batch_rows = batch_rows

    def setup(self):
        self._progress = _Progress()
        self._blank = Metrics.counter("pipelines.read", "blank_lines_skipped")

    def process(self, path):
        if self._format == "parquet":
            yield from self._kept(_parquet_batches(path, self._batch_rows))
            return
        with FileSystems.open(path) as handle:  # compression from the extension
            yield from self._kept(_STREAM_READERS[self._format](handle, path, self._batch_rows, self._blank))

    def _kept(self, batches):
        for batch in batches:
            if batch.num_rows:
                self._progress.add(batch.num_rows)
                yield batch


class ReadBatches(beam.PTransform):
    """Reads every file matching a pattern into :class:`RawBatch` elements.

    Args:
        pattern: str. File pattern, local or any Beam filesystem URI.
        input_format: str. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord`` (as for
            :class:`pipelines.read.ReadRecords`, whose rows and rejects these batches hold).
        batch_rows: int. Rows per batch, at most.
    """

    def __init__(self, pattern: str, input_format: str, batch_rows: int = BATCH_ROWS):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise OptionError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
        if batch_rows < 1:
            raise OptionError(f"batch_rows must be at least 1, got {batch_rows}")
        self._pattern = pattern
        self._format = input_format
        self._batch_rows = batch_rows

    def expand(self, pbegin):
        return (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Spread" >> beam.Reshuffle()
            | "ReadBlocks" >> beam.ParDo(_ReadFileBatches(self._format, self._batch_rows))
        )
