"""tf.train.Example serialization of a whole Arrow table at once, without TensorFlow.

Gives, row for row, the same bytes as :func:`pipelines.write.example_from_row` (a test checks
this and parses them with ``tf.io.parse_example``): every row's Example is the concatenation of
one map entry per column, and an entry is a header that depends only on the column and on the
length of its payload, followed by the payload (UTF-8 bytes, a float32, or an int64 varint).
So the headers come from a small table per column, the payloads straight from the Arrow buffers,
and :func:`pipelines.ragged.concat_rows` joins them with numpy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from feature_specs.spec import Column
from pipelines.ragged import Ragged, concat_rows, take
from pipelines.write import _feature_key, _field

_MAX_VARINT_BYTES = 10
_KIND = {"string": 1, "float": 2}  # Feature.bytes_list, Feature.float_list; int64_list otherwise
_INT64_LIST = 3


def varints(values: np.ndarray) -> Ragged:
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
    return Ragged.masked(matrix, lengths)


def _header(key: bytes, kind: int, payload_length: int) -> bytes:
    """The bytes of one column's map entry before a payload of ``payload_length`` bytes."""
    entry = _field(1, key + _field(2, _field(kind, _field(1, b"\0" * payload_length))))
    return entry[: len(entry) - payload_length]


def _headers(key: bytes, kind: int, payload_lengths: np.ndarray) -> Ragged:
    """Each row's entry header, gathered from one header per distinct payload length."""
    distinct, index = np.unique(payload_lengths, return_inverse=True)
    table = [_header(key, kind, int(n)) for n in distinct]
    flat = np.frombuffer(b"".join(table), dtype=np.uint8)
    return take(Ragged(flat, np.array([len(h) for h in table], dtype=np.int64)), index.reshape(-1))


def _column_pieces(column: Column, key: bytes, array: pa.Array) -> list[Ragged]:
    if array.null_count:
        raise ValueError(f"{column.name}: a validated column holds nulls; every Example needs a value")
    n = len(array)
    if column.dtype == "string":
        payload = Ragged.from_arrow(array.cast(pa.string()) if not pa.types.is_string(array.type) else array)
        return [_headers(key, _KIND["string"], payload.lengths), payload]
    values = array.to_numpy(zero_copy_only=False)
    if column.dtype == "float":
        floats = values.astype("<f4").view(np.uint8).reshape(n, 4)
        return [Ragged.constant(_header(key, _KIND["float"], 4), n), Ragged.fixed(floats)]
    payload = varints(values)
    return [_headers(key, _INT64_LIST, payload.lengths), payload]


def encode_examples(table: pa.Table, columns: Sequence[Column]) -> Ragged:
    """Serializes every row of ``table`` as a tf.train.Example holding ``columns``.

    Args:
        table: pa.Table of validated rows: string columns as text, int and timestamp columns as
            integers, float columns as floats; no nulls.
        columns: the spec's ``all_columns`` (their order is the entries' order).

    Returns:
        Ragged: one serialized Example per row.
    """
    n = table.num_rows
    pieces = []
    for column in columns:
        pieces += _column_pieces(column, _feature_key(column.name), table.column(column.name).combine_chunks())
    if n == 0:
        return Ragged(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64))
    body = concat_rows(pieces)
    return concat_rows([Ragged.constant(b"\x0a", n), varints(body.lengths), body])
