"""CSV records as the pipeline and the sampler both read them: quoting followed across lines.

A CSV record ends at a line break outside quotes, so a quoted field may hold line breaks
(RFC 4180). Records are found by streaming the file's lines:

* a line with an even number of ``"`` ends its record (the usual case: one line, one record);
* a line with an odd number opens a quoted field, and the record runs on over the next lines
  until one of them closes it (an odd number again), for at most :data:`MAX_CSV_RECORD_BYTES`;
* the joined lines are kept as one record (a row, or one rejected row when its bytes are not
  UTF-8) only when they parse as CSV and hold the header's number of fields. Otherwise (a stray
  quote, no closing quote within the bound or before the end of the file) the first line is read
  on its own, as a row or as one rejected line, and reading resumes at the line after it. So a
  stray quote costs the line it is on (or, where the lines after it happen to complete a valid
  record with it, those lines), never the rest of the file; at most one record's worth of lines
  is held in memory.

Plain Python on iterables of bytes, so any reader (Beam's FileSystems in the pipeline, pyarrow in
the sampler) can feed it.
"""

from __future__ import annotations

import collections
import csv
from typing import Iterable, Iterator, NamedTuple

from feature_specs.input_formats import InputFileError, csv_header

# How far an open quote may run: the bytes of one record, its line breaks included. (Python's
# csv module separately refuses a single field over csv.field_size_limit(), 131,072 characters.)
MAX_CSV_RECORD_BYTES = 1 << 20
_QUOTE = b'"'


class CsvRecord(NamedTuple):
    """One CSV record as read.

    Args:
        text: str. The record without its final line break (line breaks inside quoted fields
            kept as they are); bytes that are not UTF-8 appear as ``\\x..`` escapes.
        fields: list of str, or None when the record does not parse.
        error: str or None. Why it does not parse (only where ``fields`` is None).
    """

    text: str
    fields: list[str] | None
    error: str | None = None

    @property
    def blank(self) -> bool:
        """A record of only whitespace: like csv.DictReader, a blank line holds no row."""
        return not self.text.strip()


def text_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Splits a byte stream on ``\\n``, as Beam's text source does: lines without the ``\\n`` (a
    ``\\r`` before it is kept, see :func:`without_cr`), no empty line after a final ``\\n``.

    Args:
        chunks: iterable of bytes. The stream's bytes in order, in chunks of any size.
    """
    parts: list[bytes] = []  # the unfinished line, joined once its end arrives (linear in its length)
    for chunk in chunks:
        parts.append(chunk)
        if b"\n" not in chunk:
            continue
        *lines, rest = b"".join(parts).split(b"\n")
        parts = [rest]
        yield from lines
    if rest := b"".join(parts):
        yield rest


def without_cr(line: bytes) -> bytes:
    """A line of :func:`text_lines` without the ``\\r`` of a ``\\r\\n`` line break."""
    return line[:-1] if line.endswith(b"\r") else line


def parse_csv_record(data: bytes | str, width: int, source: str) -> CsvRecord:
    """Parses one whole CSV record (no final line break) into its fields.

    Args:
        data: bytes (UTF-8) or str. The record; line breaks only inside quoted fields.
        width: int. The number of fields the file's header names.
        source: str. The file, named in errors.

    Returns:
        A record with ``fields``, or with ``fields=None`` and ``error`` saying why it does not
        parse (broken quoting, another number of fields than the header, not UTF-8).
    """
    return _parse(data, width, source)[0]


def _parse(data: bytes | str, width: int, source: str) -> tuple[CsvRecord, bool]:
    """The record, and whether its structure holds (valid CSV of ``width`` fields, even when its
    bytes are not UTF-8: then it is still one record, rejected for its encoding)."""
    bad_utf8 = None
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text, bad_utf8 = data.decode("utf-8", errors="backslashreplace"), exc
    else:
        text = data
    try:
        fields = next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        return CsvRecord(text, None, f"line is not valid CSV ({exc})"), False
    if len(fields) != width:
        return CsvRecord(text, None, f"line has {len(fields)} field(s), the header of {source} names {width}"), False
    if bad_utf8 is not None:
        return CsvRecord(text, None, f"line is not valid UTF-8 ({bad_utf8.reason} at byte {bad_utf8.start})"), True
    return CsvRecord(text, fields), True


def csv_records(lines: Iterable[bytes], width: int, source: str,
                max_record_bytes: int = MAX_CSV_RECORD_BYTES) -> Iterator[CsvRecord]:
    """The records of a CSV file's body (the lines after its header), quoting followed across lines.

    Args:
        lines: iterable of bytes. The body's lines, split on ``\\n`` (see :func:`text_lines`).
        width: int. The number of fields the header names.
        source: str. The file, named in errors.
        max_record_bytes: int. The most bytes a record that spans several lines may hold.

    Yields:
        CsvRecord, one per record, blank ones included (see :attr:`CsvRecord.blank`); every line
        of ``lines`` belongs to exactly one of them.
    """
    lines = iter(lines)
    read_again: collections.deque[bytes] = collections.deque()

    def next_line() -> bytes | None:
        return read_again.popleft() if read_again else next(lines, None)

    while (first := next_line()) is not None:
        if first.count(_QUOTE) % 2 == 0:
            yield _parse(without_cr(first), width, source)[0]
            continue
        taken, size, closed = [first], len(first) + 1, False
        while not closed and size <= max_record_bytes and (line := next_line()) is not None:
            taken.append(line)
            size += len(line) + 1
            closed = line.count(_QUOTE) % 2 == 1
        if closed and size <= max_record_bytes:
            record, whole = _parse(without_cr(b"\n".join(taken)), width, source)
            if whole:
                yield record
                continue
        read_again.extendleft(reversed(taken[1:]))
        alone = _parse(without_cr(first), width, source)[0]
        if alone.fields is None:
            alone = alone._replace(error=(
                f"{alone.error}; the quoted field it opens is not closed by the lines after it into one "
                f"record of {width} field(s) within {max_record_bytes:,} bytes"))
        yield alone


def csv_file_header(first_line: bytes | None, source: str) -> list[str]:
    """The column names in a CSV file's first line.

    Args:
        first_line: bytes or None. The first line as :func:`text_lines` gives it (a UTF-8 byte
            order mark dropped), None for an empty file.
        source: str. The file, named in errors.

    Raises:
        InputFileError: the file is empty, or its first line is not UTF-8, not CSV, names no
            column or names one twice.
    """
    if first_line is None or not first_line.strip():
        raise InputFileError(f"{source}: empty file: a CSV file needs a first line naming its columns")
    try:
        text = without_cr(first_line).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{source}: the header line is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    return csv_header(text, source)
