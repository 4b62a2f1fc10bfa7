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

from pipelines.ragged import Ragged, concat_rows

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


class CorruptRecordError(ValueError):
    """A TFRecord file whose framing or checksums are wrong (truncated or damaged)."""


def masked_crc(data: bytes) -> int:
    """The masked CRC-32C of ``data``, as stored in a TFRecord file."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _masked(crcs: np.ndarray) -> np.ndarray:
    crcs = crcs.astype(np.uint64)
    return ((((crcs >> 15) | (crcs << 17)) + _MASK_DELTA) & 0xFFFFFFFF).astype("<u4")


def frame_records(records: Ragged) -> bytes:
    """Frames every row of ``records`` as one TFRecord; the records, concatenated.

    Args:
        records: Ragged. One serialized record per row.
    """
    n = records.num_rows
    if n == 0:
        return b""
    lengths = records.lengths.astype("<u8")
    length_bytes = lengths.view(np.uint8).reshape(n, 8)
    flat = length_bytes.tobytes()
    length_crcs = _masked(np.fromiter((google_crc32c.value(flat[i:i + 8]) for i in range(0, 8 * n, 8)),
                                      dtype=np.uint64, count=n))
    data = records.data.tobytes()
    ends = np.cumsum(records.lengths)
    starts = (ends - records.lengths).tolist()
    data_crcs = _masked(np.fromiter((google_crc32c.value(data[s:e]) for s, e in zip(starts, ends.tolist())),
                                    dtype=np.uint64, count=n))
    header = np.concatenate([length_bytes, length_crcs.view(np.uint8).reshape(n, 4)], axis=1)
    framed = concat_rows([Ragged.fixed(header), records, Ragged.fixed(data_crcs.view(np.uint8).reshape(n, 4))])
    return framed.data.tobytes()


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
