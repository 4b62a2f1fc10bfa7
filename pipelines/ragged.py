"""Rows of bytes as Arrow binary arrays, built and joined row-wise without Python work per row.

The vectorized tf.Example encoder and the TFRecord framing build every row's bytes by joining,
row by row, pieces that are each one byte string per row: an Arrow binary array (from numpy
buffers, a gathered table of headers, or an Arrow string column as it is) or a constant scalar;
``pyarrow.compute.binary_join_element_wise`` concatenates them in C++.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EMPTY = pa.scalar(b"", pa.binary())


def constant(value: bytes) -> pa.Scalar:
    """The same bytes in every row (a scalar: the join repeats it)."""
    return pa.scalar(value, pa.binary())


def from_buffer(data: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """Row ``i`` is the next ``lengths[i]`` bytes of ``data`` (uint8, rows back to back)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.BinaryArray.from_buffers(pa.binary(), len(lengths),
                                       [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))])


def fixed(matrix: np.ndarray) -> pa.BinaryArray:
    """Row ``i`` is ``matrix[i]`` (a (rows, width) uint8 matrix)."""
    rows, width = matrix.shape
    return from_buffer(np.ascontiguousarray(matrix).reshape(-1), np.full(rows, width, dtype=np.int64))


def masked(matrix: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """Row ``i`` is ``matrix[i, :lengths[i]]``."""
    keep = np.arange(matrix.shape[1]) < lengths[:, None]
    return from_buffer(matrix[keep], lengths)


def take(table: Sequence[bytes], index: np.ndarray) -> pa.Array:
    """Row ``j`` is ``table[index[j]]`` (a few distinct byte strings gathered into many rows)."""
    return pa.array(table, pa.binary()).take(pa.array(index, pa.int64()))


def join(pieces: Sequence) -> pa.Array:
    """Row ``i`` is the concatenation of row ``i`` of every piece, in order."""
    return pc.binary_join_element_wise(*pieces, _EMPTY)


def lengths(rows: pa.Array) -> np.ndarray:
    """The byte length of every row, as int64."""
    return np.asarray(pc.binary_length(rows).to_numpy(zero_copy_only=False), dtype=np.int64)


def flat(rows: pa.Array) -> bytes:
    """Every row's bytes, back to back."""
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
    return rows.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]] if len(rows) else b""
