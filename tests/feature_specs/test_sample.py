"""The one sampler (feature_specs/sample.py) that `mmoe spec infer` and `mmoe spec check` share, and
its agreement with the pipeline's readers (pipelines/options.py, pipelines/read.py) on formats,
compression, CSV/JSONL lines and TFRecord Examples."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib

import pytest
import zstandard

from feature_specs import check, infer, sample
from feature_specs.check import check_spec
from feature_specs.infer import infer_spec
from feature_specs.sample import InferError, input_format_of, read_sample
from log_writers import write_csv

ROWS = [{"request_id": f"r{i // 4}", "device": ["ios", "web", "android"][i % 3], "price": 1.5 * i,
         "clicked": i % 2} for i in range(60)]
SPEC = """
name: tiny
features:
  - {name: device, type: string, transform: vocabulary}
  - {name: price, type: float, transform: zscore}
columns:
  - {name: request_id, type: string}
  - {name: clicked, type: int, min: 0, max: 1}
tasks:
  - {name: click, label: clicked, kind: binary}
ranking: {group_by: request_id, weights: {click: 1.0}}
split: {key: request_id}
"""
COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress, ".deflate": zlib.compress,
               ".zst": zstandard.ZstdCompressor().compress}


def test_infer_and_check_read_through_the_same_sampler():
    assert infer.read_sample is sample.read_sample
    assert check.read_sample is sample.read_sample
    assert infer.InferError is check.InferError is sample.InferError


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_infer_and_check_read_every_compression_the_pipeline_reads(tmp_path, suffix):
    plain = write_csv(tmp_path / "log.csv", ROWS)
    with open(plain, "rb") as handle:
        data = handle.read()
    path = tmp_path / f"log.csv{suffix}"
    path.write_bytes(COMPRESSORS[suffix](data))
    assert read_sample(str(path)).rows == read_sample(plain).rows
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(SPEC)
    assert check_spec(str(spec_path), str(path)) == []
    assert infer_spec(str(path), {"click": "clicked"}, group_by="request_id").spec.task_names == ("click",)


def test_concatenated_gzip_members_are_read_whole(tmp_path):
    header, *lines = open(write_csv(tmp_path / "log.csv", ROWS), "rb").read().splitlines(keepends=True)
    path = tmp_path / "log.csv.gz"
    path.write_bytes(gzip.compress(header + b"".join(lines[:30])) + gzip.compress(b"".join(lines[30:])))
    assert len(read_sample(str(path)).rows) == len(ROWS)


def test_a_compression_the_pipeline_cannot_read_is_refused(tmp_path):
    path = tmp_path / "log.csv.snappy"
    path.write_bytes(b"x")
    with pytest.raises(InferError, match="snappy"):
        read_sample(str(path))


@pytest.mark.parametrize("name", ["a.csv", "a.CSV.GZ", "a.pq", "a.parquet", "a.jsonl.bz2", "a.ndjson", "a.json",
                                  "a.tfrecord", "a.tfrecords.gz", "a.csv.zstd", "a.jsonl.xz", "logs/part-*.csv.deflate"])
def test_the_format_is_the_pipelines(name):
    from pipelines.options import infer_input_format

    assert input_format_of(name) == infer_input_format(name)


def test_csv_lines_are_taken_or_rejected_as_the_pipeline_does(tmp_path):
    from pipelines.read import parse_csv_line

    lines = [b"a,b", b'"x, y",2', b"3", b'"open,4', b"\xff\xfe,5", b"", b"  ", b"6,7\r", b"8,9,10", "é,ü".encode()]
    path = tmp_path / "lines.csv"
    path.write_bytes(b"\xef\xbb\xbfname,value\n" + b"\n".join(lines) + b"\n")
    got = read_sample(str(path))
    assert got.columns == ["name", "value"]
    body = [line[:-1] if line.endswith(b"\r") else line for line in lines if line.strip()]
    pipeline = [parse_csv_line(str(path), line, ["name", "value"]) for line in body]
    assert got.rows == [r.values for r in pipeline if r.values is not None]
    assert got.unparsed_lines == sum(r.values is None for r in pipeline)


def test_a_header_naming_a_column_twice_fails_as_in_the_pipeline(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(InferError, match="names column.s. a more than once"):
        read_sample(str(path))


def test_jsonl_lines_are_taken_or_rejected_as_the_pipeline_does(tmp_path):
    from pipelines.read import parse_json_line

    lines = [b'{"a": 1, "b": "x"}', b"[1, 2]", b"{broken", b'{"a": NaN}', b"\xff{}", b'{"c": null}']
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    got = read_sample(str(path))
    pipeline = [parse_json_line(str(path), line) for line in lines]
    assert [str(r) for r in got.rows] == [str(r.values) for r in pipeline if r.values is not None]
    assert got.unparsed_lines == sum(r.values is None for r in pipeline)
    assert got.columns == ["a", "b", "c"]


def test_tfrecord_examples_read_as_the_pipeline_parses_them(tmp_path):
    import tensorflow as tf

    from pipelines.read import parse_example

    def example(i: int) -> bytes:
        return tf.train.Example(features=tf.train.Features(feature={
            "device": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ios" if i % 2 else b"web"])),
            "price": tf.train.Feature(float_list=tf.train.FloatList(value=[0.1 * i])),
            "clicked": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            "tags": tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2])),
            "empty": tf.train.Feature(float_list=tf.train.FloatList(value=[])),
        })).SerializeToString()

    records = [example(i) for i in range(30)]
    path = str(tmp_path / "log.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in records:
            writer.write(record)
    got = read_sample(path)
    assert got.input_format == "tfrecord" and got.exhausted
    assert got.rows == [parse_example(path, record).values for record in records]
    assert got.rows[1] == {"device": b"ios", "price": 0.1, "clicked": 1, "tags": [1, 2], "empty": None}
