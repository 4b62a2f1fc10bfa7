"""Writers' encodings and the run report's arithmetic and reconciliation."""

import datetime
import json

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from pipelines.records import Rejection
from pipelines.report import (CountRows, ReconciliationError, RejectRateError, build_report, check_reconciled,
                              check_reject_rate, format_table)
from pipelines.write import WriteExamples, example_from_row, vocabulary_text

ROW = {"user": "ü1", "hour": 7, "age": 41, "price": 9.5, "pop": 0.25, "query": "shoes",
       "position": 2, "request_id": "r1", "ts": 1700000000, "clicked": 1, "dwell": 12.5}


def test_example_holds_every_column_with_its_type(tiny_spec):
    example = tf.train.Example.FromString(example_from_row(ROW, tiny_spec.all_columns))
    features = example.features.feature
    assert set(features) == set(ROW)
    assert features["user"].bytes_list.value == ["ü1".encode("utf-8")]
    assert features["ts"].int64_list.value == [1700000000]
    assert features["hour"].int64_list.value == [7]
    assert features["dwell"].float_list.value == [12.5]


@pytest.mark.parametrize("changes", [
    {}, {"user": "", "query": "x" * 300}, {"ts": -(2**63), "hour": -1}, {"ts": 2**63 - 1, "age": 0},
    {"price": 3.4028234663852886e38, "pop": -0.1, "dwell": 1e-45},
])
def test_hand_written_wire_format_equals_tensorflows(tiny_spec, changes):
    row = {**ROW, **changes}
    expected = tf.train.Example()
    for column in tiny_spec.all_columns:
        feature = expected.features.feature[column.name]
        value = row[column.name]
        if column.dtype == "string":
            feature.bytes_list.value.append(value.encode("utf-8"))
        elif column.dtype == "float":
            feature.float_list.value.append(value)
        else:
            feature.int64_list.value.append(value)
    assert tf.train.Example.FromString(example_from_row(row, tiny_spec.all_columns)) == expected


def test_rejection_json_is_always_valid_json():
    row = {"x": float("nan"), "b": b"\xff\x00", "t": datetime.datetime(2024, 1, 2), "n": None}
    line = Rejection("p.parquet", row, "not_finite", "x", "x: nan is not a finite number").to_json()
    data = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data == {"source": "p.parquet", "reason": "not_finite", "field": "x",
                    "message": "x: nan is not a finite number",
                    "row": {"x": "nan", "b": {"base64": "/wA="}, "t": "2024-01-02T00:00:00", "n": None}}


def test_vocabulary_text():
    assert vocabulary_text(["b", "a", 3]) == "b\na\n3\n"
    assert vocabulary_text([]) == ""


def test_tfrecords_read_back_in_tensorflow(tiny_spec, test_pipeline, tmp_path):
    prefix = str(tmp_path / "train")
    with test_pipeline() as p:
        p | beam.Create([ROW, {**ROW, "user": "u2"}]) | WriteExamples(prefix, tiny_spec.all_columns)
    files = tf.io.gfile.glob(prefix + "-*.tfrecord.gz")
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP"))  # TF checks every CRC
    users = sorted(tf.train.Example.FromString(r.numpy()).features.feature["user"].bytes_list.value[0]
                   for r in records)
    assert users == ["u2".encode(), "ü1".encode()]


def counts(input_rows, train, eval_, by_reason, by_field=None):
    return {"input_rows": input_rows, "written": {"train": train, "eval": eval_},
            "rejected_by_reason": by_reason, "rejected_by_field": by_field or {}, "quality": None}


def test_build_report_reconciles():
    report = build_report(counts(10, 6, 2, {"missing": 1, "wrong_type": 1}, {"user": 2}), "tiny", "in/*.csv", 1.23456)
    assert report["written"] == {"train": 6, "eval": 2, "total": 8}
    assert report["rejected"]["total"] == 2
    assert report["rejected"]["by_reason"] == {"unparseable_line": 0, "unknown_column": 0, "missing": 1,
                                               "wrong_type": 1, "not_finite": 0, "out_of_range": 0, "too_long": 0}
    assert report["rejected"]["by_field"] == {"user": 2}
    assert report["reject_rate"] == 0.2 and report["reconciled"] is True
    assert (report["spec"], report["input"], report["seconds"]) == ("tiny", "in/*.csv", 1.235)
    check_reconciled(report)
    table = format_table(report)
    assert "input rows" in table and "missing" in table and "20.00%" in table


def test_unreconciled_counts_raise():
    report = build_report(counts(10, 6, 2, {"missing": 1}), "tiny", "in", 0.0)
    assert report["reconciled"] is False
    with pytest.raises(ReconciliationError, match="10 input rows"):
        check_reconciled(report)
    assert build_report(counts(0, 0, 0, {}), "tiny", "in", 0.0)["reject_rate"] == 0.0


def test_count_rows_transform(test_pipeline):
    rejections = [Rejection("f", "l", "missing", "user", "m"), Rejection("f", "l", "missing", "hour", "m"),
                  Rejection("f", "l", "unparseable_line", None, "m")]
    with test_pipeline() as p:
        result = {"input": p | "In" >> beam.Create(range(7)),
                  "rejected": p | "Rej" >> beam.Create(rejections),
                  "train": p | "Train" >> beam.Create(range(3)),
                  "eval": p | "Eval" >> beam.Create([])} | CountRows()
        assert_that(result, equal_to([counts(7, 3, 0, {"missing": 2, "unparseable_line": 1},
                                             {"user": 1, "hour": 1})]))


def test_reject_rate_above_the_threshold_raises_a_clear_error():
    report = build_report(counts(10, 6, 2, {"missing": 1, "wrong_type": 1}, {"user": 2}), "tiny", "in", 0.0,
                          max_reject_rate=0.15)
    assert report["max_reject_rate"] == 0.15 and report["reject_rate_ok"] is False
    assert "FAIL" in format_table(report)
    with pytest.raises(RejectRateError, match=r"2 of 10 input rows \(20.00%\).*max_reject_rate 15.00%"
                                              r".*missing 1.*user 2.*report.json"):
        check_reject_rate(report)
    ok = build_report(counts(10, 6, 2, {"missing": 2}), "tiny", "in", 0.0, max_reject_rate=0.2)
    assert ok["reject_rate_ok"] is True  # at the threshold is allowed
    check_reject_rate(ok)
