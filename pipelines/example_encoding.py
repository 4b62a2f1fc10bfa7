"""tf.train.Example serialization of a whole Arrow table at once, without TensorFlow.

Gives, row for row, the same bytes as :func:`pipelines.write.example_from_row` (a test checks
this and parses them with ``tf.io.parse_example``): every row's Example is the concatenation of
one map entry per column, and an entry is a header that depends only on the column and on the
length of its payload, followed by the payload (UTF-8 bytes, a float32, or an int64 varint).
So the headers come from a small table per column, the payloads straight from the Arrow columns
(or numpy), and :func:`pipelines.ragged.join` joins them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_specs.spec import Column
from pipelines import ragged
from pipelines.write import _feature_key, _field

_MAX_VARINT_BYTES = 10
_KIND = {"string": 1, "float": 2}  # Feature.bytes_list, Feature.float_list; int64_list otherwise
_INT64_LIST = 3


def varints(values: np.ndarray) -> pa.BinaryArray:
    """The protobuf varint of each value (int64 as its 64-bit two's complement, as protobuf does).

    Args:
        values: int array (n,).
    """
    v = values.astype(np.int64).view(np.uint64)
    lengths = np.ones(len(v), dtype=np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        lengths += rest != 0
        rest >>= np.uint64(7)
    width = int(lengths.max()) if len(v) else 1
    matrix = np.empty((len(v), width), dtype=np.uint8)
    for b in range(width):
        low = ((v >> np.uint64(7 * b)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, b] = low | np.where(b < lengths - 1, 0x80, 0).astype(np.uint8)
    return ragged.masked(matrix, lengths)


def _header(key: bytes, kind: int, payload_length: int) -> bytes:
    """The bytes of one column's map entry before a payload of ``payload_length`` bytes."""
    entry = _field(1, key + _field(2, _field(kind, _field(1, b"\0" * payload_length))))
    return entry[: len(entry) - payload_length]


def _headers(key: bytes, kind: int, payload_lengths: np.ndarray, header=_header) -> pa.Array:
    """Each row's entry header, gathered from one header per distinct payload length."""
    distinct, index = np.unique(payload_lengths, return_inverse=True)
    return ragged.take([header(key, kind, int(n)) for n in distinct], index.reshape(-1))


def _list_pieces(column: Column, key: bytes, array: pa.ListArray) -> list:
    """A list column's entry per row, as :func:`pipelines.write.list_feature` writes it: the
    elements' encodings (each string framed as a ``value`` field; ints as packed varints) joined
    per row by the list offsets."""
    elements = array.flatten()  # from the first row's first element, also for a sliced array
    offsets = pc.subtract(array.offsets, array.offsets[0])
    if column.dtype == "string":
        text = elements.cast(pa.binary())
        framed = ragged.join([ragged.constant(b"\x0a"), varints(ragged.lengths(text)), text])
        content = pc.binary_join(pa.ListArray.from_arrays(offsets, framed), b"")
        kind = _KIND["string"]
    else:
        packed = pc.binary_join(pa.ListArray.from_arrays(offsets, varints(elements.to_numpy(zero_copy_only=False))), b"")
        content = ragged.join([ragged.constant(b"\x0a"), varints(ragged.lengths(packed)), packed])
        kind = _INT64_LIST
    return [_headers(key, kind, ragged.lengths(content), _content_header), content]


def _content_header(key: bytes, kind: int, content_length: int) -> bytes:
    """The bytes of a list column's map entry before its Feature's list message of ``content_length`` bytes."""
    entry = _field(1, key + _field(2, _field(kind, b"\0" * content_length)))
    return entry[: len(entry) - content_length]


def _column_pieces(column: Column, key: bytes, array: pa.Array) -> list:
    if array.null_count:
        raise ValueError(f"{column.name}: a validated column holds nulls; every Example needs a value")
    if column.list is not None:
        return _list_pieces(column, key, array)
    n = len(array)
    if column.dtype == "string":
        payload = array.cast(pa.binary())
        return [_headers(key, _KIND["string"], ragged.lengths(payload)), payload]
    values = array.to_numpy(zero_copy_only=False)
    if column.dtype == "float":
        floats = values.astype("<f4").view(np.uint8).reshape(n, 4)
        return [ragged.constant(_header(key, _KIND["float"], 4)), ragged.fixed(floats)]
    payload = varints(values)
    return [_headers(key, _INT64_LIST, ragged.lengths(payload)), payload]


def encode_examples(table: pa.Table, columns: Sequence[Column]) -> pa.Array:
    """Serializes every row of ``table`` as a tf.train.Example holding ``columns``.

    Args:
        table: pa.Table of validated rows: string columns as text, int and timestamp columns as
            integers, float columns as floats, list columns as lists of text or int64; no nulls.
        columns: the spec's ``all_columns`` (their order is the entries' order).

    Returns:
        pa.BinaryArray: one serialized Example per row.
    """
    if table.num_rows == 0:
        return pa.array([], pa.binary())
    pieces = []
    for column in columns:
        pieces += _column_pieces(column, _feature_key(column.name), table.column(column.name).combine_chunks())
    body = ragged.join(pieces)
    return ragged.join([ragged.constant(b"\x0a"), varints(ragged.lengths(body)), body])
