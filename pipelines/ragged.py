"""Ragged byte arrays: one variable-length byte string per row, in one flat numpy buffer.

The vectorized tf.Example encoder and the TFRecord framing build every row's bytes by
concatenating, row by row, pieces that are each a :class:`Ragged` (or a fixed-width matrix),
with a handful of numpy operations per piece instead of Python work per row.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pyarrow as pa


class Ragged(NamedTuple):
    """``num_rows`` byte strings: row ``i`` is ``data[offsets[i]:offsets[i] + lengths[i]]``,
    rows stored back to back in order.

    Args:
        data: uint8 array (total bytes,) or, for a fixed-width piece, (num_rows, width).
        lengths: int64 array (num_rows,).
    """

    data: np.ndarray
    lengths: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    @classmethod
    def fixed(cls, matrix: np.ndarray) -> "Ragged":
        """Rows of equal width from a (num_rows, width) uint8 matrix (may be a broadcast view)."""
        return cls(matrix, np.full(matrix.shape[0], matrix.shape[1], dtype=np.int64))

    @classmethod
    def constant(cls, value: bytes, num_rows: int) -> "Ragged":
        row = np.frombuffer(value, dtype=np.uint8)
        return cls.fixed(np.broadcast_to(row, (num_rows, len(value))))

    @classmethod
    def from_arrow(cls, array: pa.Array) -> "Ragged":
        """The values of a string or binary Arrow array without nulls (UTF-8 bytes as stored)."""
        if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
            offset_type = np.int64
        else:
            offset_type = np.int32
        _, offsets_buffer, data_buffer = array.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=len(array) + 1,
                                offset=array.offset * np.dtype(offset_type).itemsize).astype(np.int64)
        data = (np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None
                else np.zeros(0, dtype=np.uint8))
        return cls(data[offsets[0]:offsets[-1]], np.diff(offsets))

    @classmethod
    def masked(cls, matrix: np.ndarray, lengths: np.ndarray) -> "Ragged":
        """Row ``i`` is ``matrix[i, :lengths[i]]``."""
        keep = np.arange(matrix.shape[1]) < lengths[:, None]
        return cls(matrix[keep], lengths.astype(np.int64))

    def to_list(self) -> list[bytes]:
        flat = self.data.reshape(-1).tobytes() if self.data.ndim == 2 else self.data.tobytes()
        ends = np.cumsum(self.lengths).tolist()
        starts = [0] + ends[:-1]
        return [flat[s:e] for s, e in zip(starts, ends)]


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum: where each row starts in a back-to-back buffer."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def take(table: Ragged, index: np.ndarray) -> Ragged:
    """Row ``j`` is ``table``'s row ``index[j]`` (a small table gathered into many rows)."""
    lengths = table.lengths[index]
    total = int(lengths.sum())
    source = np.repeat(_starts(table.lengths)[index] - _starts(lengths), lengths) + np.arange(total)
    return Ragged(table.data.reshape(-1)[source], lengths)


def concat_rows(pieces: Sequence[Ragged]) -> Ragged:
    """Row ``i`` is the concatenation of row ``i`` of every piece, in order.

    Args:
        pieces: Ragged pieces with the same number of rows.
    """
    lengths = np.sum([p.lengths for p in pieces], axis=0).astype(np.int64)
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    position = _starts(lengths)
    for piece in pieces:
        if piece.data.ndim == 2:
            width = piece.data.shape[1]
            if width:
                out[position[:, None] + np.arange(width)] = piece.data
        elif piece.data.size:
            out[np.repeat(position - _starts(piece.lengths), piece.lengths) + np.arange(piece.data.size)] = piece.data
        position = position + piece.lengths
    return Ragged(out, lengths)
