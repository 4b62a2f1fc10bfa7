"""The vectorized tf.Example encoder and the TFRecord framing, checked against TensorFlow."""

import gzip
import io

import google_crc32c

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_specs.spec import Column
from pipelines.example_encoding import encode_examples, varints
from pipelines.tfrecord import CorruptRecordError, crc32c_rows, frame_records, read_records
from pipelines.write import _varint, example_from_row

COLUMNS = [Column(name="s", dtype="string"), Column(name="i", dtype="int"), Column(name="f", dtype="float"),
           Column(name="t", dtype="timestamp"), Column(name="long_" + "é" * 80, dtype="string")]
SCHEMA = pa.schema([("s", pa.string()), ("i", pa.int64()), ("f", pa.float64()), ("t", pa.int64()),
                    ("long_" + "é" * 80, pa.string())])
ROW = st.fixed_dictionaries({
    "s": st.text(max_size=300),
    "i": st.integers(-(2**63), 2**63 - 1),
    "f": st.floats(-3.0e38, 3.0e38, allow_nan=False),
    "t": st.integers(0, 2**62),
    "long_" + "é" * 80: st.text(alphabet="ab€", max_size=200),
})


@settings(max_examples=40, deadline=None)
@given(st.lists(ROW, min_size=1, max_size=30))
def test_examples_are_the_row_encoders_bytes(rows):
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    assert encode_examples(table, COLUMNS).to_pylist() == [example_from_row(r, COLUMNS) for r in rows]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=50))
def test_varints_are_protobufs(values):
    assert varints(np.array(values, dtype=np.int64)).to_pylist() == [_varint(v) for v in values]


@given(st.lists(st.binary(min_size=5, max_size=5), min_size=1, max_size=20))
def test_the_vectorized_crc32c_is_google_crc32c(rows):
    matrix = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 5)
    assert crc32c_rows(matrix).tolist() == [google_crc32c.value(row) for row in rows]


def test_tensorflow_parses_the_examples_and_reads_the_framed_records(tmp_path):
    rows = [{"s": "héllo", "i": -5, "f": 0.1, "t": 1700000000, "long_" + "é" * 80: ""},
            {"s": "", "i": 2**40, "f": -3.0e38, "t": 0, "long_" + "é" * 80: "x" * 1000}]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    examples = encode_examples(table, COLUMNS)
    kinds = {"string": tf.string, "float": tf.float32}
    parsed = tf.io.parse_example(tf.constant(examples.to_pylist()),
                                 {c.name: tf.io.FixedLenFeature([], kinds.get(c.dtype, tf.int64)) for c in COLUMNS})
    assert [v.decode() for v in parsed["s"].numpy()] == ["héllo", ""]
    assert parsed["i"].numpy().tolist() == [-5, 2**40]
    assert parsed["f"].numpy().tolist() == pytest.approx([0.1, -3.0e38], rel=1e-7)
    assert [len(v) for v in parsed["long_" + "é" * 80].numpy()] == [0, 1000]
    path = tmp_path / "x.tfrecord.gz"
    path.write_bytes(gzip.compress(frame_records(examples)))
    read = [r.numpy() for r in tf.data.TFRecordDataset([str(path)], compression_type="GZIP")]
    assert read == examples.to_pylist()
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in read:
            writer.write(record)
    assert (tmp_path / "tf.tfrecord").read_bytes() == frame_records(examples)


def test_a_damaged_record_is_named_not_read():
    framed = bytearray(frame_records(pa.array([b"abc", b"defg"], pa.binary())))
    assert list(read_records(io.BytesIO(bytes(framed)), "f")) == [b"abc", b"defg"]
    framed[14] ^= 1  # a byte of the first record's data
    with pytest.raises(CorruptRecordError, match="f: record 0: the data's checksum"):
        list(read_records(io.BytesIO(bytes(framed)), "f"))
    with pytest.raises(CorruptRecordError, match="record 1 is truncated"):
        list(read_records(io.BytesIO(frame_records(pa.array([b"abc", b"defg"], pa.binary()))[:-3]), "f"))


def test_a_validated_column_with_nulls_is_refused():
    table = pa.table({"s": pa.array(["a", None])})
    with pytest.raises(ValueError, match="s: a validated column holds nulls"):
        encode_examples(table, [Column(name="s", dtype="string")])


@pytest.mark.parametrize("sink_class, first, second", [("_FramedRecordsSink", b"rows of bundle a", b"bundle b"),
                                                       ("_JsonLinesSink", '{"row": 1}', '{"row": 2}')])
def test_parallel_bundles_fill_the_same_shard_files_whatever_their_ids(tmp_path, sink_class, first, second):
    """Beam numbers shards in the order of its writers' temporary names; with random ids, which shard
    got which bundle varied between runs on threads or worker processes."""
    import pipelines.write as write

    shards = []
    for run, uids in enumerate((("0", "1"), ("1", "0"))):
        sink = getattr(write, sink_class)(str(tmp_path / f"run{run}" / "part"))
        init = sink.initialize_write()
        closed = []
        for uid, element in zip(uids, (first, second)):
            writer = sink.open_writer(init, uid)
            writer.write(element)
            closed.append(writer.close())
        final = list(sink.finalize_write(init, closed, sink.pre_finalize(init, closed)))
        opener = gzip.open if sink_class == "_FramedRecordsSink" else open
        shards.append([opener(path, "rb").read() for path in sorted(final)])
    assert shards[0] == shards[1] and len(shards[0]) == 2
