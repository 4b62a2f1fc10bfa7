"""The TFRecord container without TensorFlow: framing many records at once, and reading them back.

Each record is ``uint64 length | masked crc32c(length) | data | masked crc32c(data)``
(little-endian), the masked CRC being ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` mod 2**32, as
TensorFlow's ``tf.io.TFRecordWriter`` writes it. CRC-32C comes from ``google_crc32c`` (a C
extension, pinned; Beam's own TFRecord I/O uses it too).
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterator

import google_crc32c
import numpy as np

import pyarrow as pa

from pipelines import ragged

_MASK_DELTA = 0xA282EAD8
_CASTAGNOLI_REFLECTED = 0x82F63B78


def _crc32c_table() -> np.ndarray:
    """The byte-at-a-time CRC-32C table: entry ``b`` is the CRC register after shifting in byte ``b``."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_CASTAGNOLI_REFLECTED), table >> 1).astype(np.uint32)
    return table


_CRC32C_TABLE = _crc32c_table()
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


class CorruptRecordError(ValueError):
    """A TFRecord file whose framing or checksums are wrong (truncated or damaged)."""


def masked_crc(data: bytes) -> int:
    """The masked CRC-32C of ``data``, as stored in a TFRecord file."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """The CRC-32C of each row of a fixed-width byte matrix, all rows at once (one step per column).

    Args:
        rows: np.ndarray of uint8, shape (n, w).

    Returns:
        np.ndarray of uint32, shape (n,).
    """
    crc = np.full(len(rows), 0xFFFFFFFF, dtype=np.uint32)
    for column in rows.T:
        crc = _CRC32C_TABLE[(crc ^ column) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def _masked(crcs: np.ndarray) -> np.ndarray:
    crcs = crcs.astype(np.uint64)
    return ((((crcs >> 15) | (crcs << 17)) + _MASK_DELTA) & 0xFFFFFFFF).astype("<u4")


def frame_records(records: pa.Array) -> bytes:
    """Frames every row of ``records`` as one TFRecord; the records, concatenated.

    Args:
        records: pa.BinaryArray. One serialized record per row.
    """
    n = len(records)
    if n == 0:
        return b""
    lengths = ragged.lengths(records)
    length_bytes = lengths.astype("<u8").view(np.uint8).reshape(n, 8)
    length_crcs = _masked(crc32c_rows(length_bytes))
    data = ragged.flat(records)
    ends = np.cumsum(lengths)
    pieces = map(data.__getitem__, map(slice, (ends - lengths).tolist(), ends.tolist()))
    data_crcs = _masked(np.fromiter(map(google_crc32c.value, pieces), dtype=np.uint64, count=n))
    header = np.concatenate([length_bytes, length_crcs.view(np.uint8).reshape(n, 4)], axis=1)
    framed = ragged.join([ragged.fixed(header), records, ragged.fixed(data_crcs.view(np.uint8).reshape(n, 4))])
    return ragged.flat(framed)


def read_records(handle: BinaryIO, source: str) -> Iterator[bytes]:
    """The records of one (already decompressed) TFRecord stream, checksums verified.

    Raises:
        CorruptRecordError: a truncated record or a checksum that does not match, naming ``source``.
    """
    index = 0
    while True:
        header = handle.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise CorruptRecordError(f"{source}: record {index} is truncated (its header has {len(header)} bytes)")
        length, length_crc = _HEADER.unpack(header)
        if masked_crc(header[:8]) != length_crc:
            raise CorruptRecordError(f"{source}: record {index}: the length's checksum does not match")
        data = handle.read(length)
        footer = handle.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            raise CorruptRecordError(f"{source}: record {index} is truncated")
        if masked_crc(data) != _FOOTER.unpack(footer)[0]:
            raise CorruptRecordError(f"{source}: record {index}: the data's checksum does not match")
        yield data
        index += 1
