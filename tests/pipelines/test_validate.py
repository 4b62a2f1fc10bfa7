"""Validation: typed rows, defaults, and every reject reason with field and message."""

import dataclasses
import datetime

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.records import RawRecord, Rejection
from pipelines.validate import ValidateRows, check_record, log1p_columns

GOOD = {"user": "u1", "hour": "7", "age": "41", "price": "9.5", "pop": "0.25", "query": "shoes",
        "position": "2", "request_id": "r1", "ts": "1700000000", "clicked": "1", "dwell": "12.5"}
TYPED = {"user": "u1", "hour": 7, "age": 41, "price": 9.5, "pop": 0.25, "query": "shoes",
         "position": 2, "request_id": "r1", "ts": 1700000000, "clicked": 1, "dwell": 12.5}


def record(**changes):
    values = {**GOOD, **changes}
    values = {k: v for k, v in values.items() if v is not DROP}
    return RawRecord("in.csv", ",".join(str(v) for v in values.values()), values)


DROP = object()


def check(spec, **changes):
    return check_record(record(**changes), spec.all_columns, frozenset({"price"}))


def test_valid_row_is_typed_with_exactly_the_spec_columns(tiny_spec):
    row = check(tiny_spec, extra_column="ignored")
    assert row == TYPED
    assert [type(row[k]) for k in ("user", "hour", "price", "ts")] == [str, int, float, int]


def test_optional_column_missing_or_empty_gets_its_default(tiny_spec):
    assert check(tiny_spec, age=DROP)["age"] == 30
    assert check(tiny_spec, age="")["age"] == 30
    assert check(tiny_spec, age=None)["age"] == 30


@pytest.mark.parametrize("changes, reason, field", [
    ({"user": DROP}, "missing", "user"),
    ({"user": ""}, "missing", "user"),
    ({"dwell": "  "}, "missing", "dwell"),
    ({"hour": "abc"}, "wrong_type", "hour"),
    ({"hour": "3.5"}, "wrong_type", "hour"),
    ({"hour": 3.5}, "wrong_type", "hour"),
    ({"hour": True}, "wrong_type", "hour"),
    ({"clicked": "true"}, "wrong_type", "clicked"),
    ({"price": "abc"}, "wrong_type", "price"),
    ({"price": False}, "wrong_type", "price"),
    ({"user": 1.5}, "wrong_type", "user"),
    ({"ts": "yesterday"}, "wrong_type", "ts"),
    ({"pop": "nan"}, "not_finite", "pop"),
    ({"pop": "inf"}, "not_finite", "pop"),
    ({"pop": float("-inf")}, "not_finite", "pop"),
    ({"hour": "24"}, "out_of_range", "hour"),
    ({"hour": "-1"}, "out_of_range", "hour"),
    ({"clicked": "2"}, "out_of_range", "clicked"),
    ({"price": "-0.5"}, "out_of_range", "price"),
    ({"ts": str(2**63)}, "out_of_range", "ts"),
    ({"pop": "1e39"}, "out_of_range", "pop"),
])
def test_reject_reason_and_field(tiny_spec, changes, reason, field):
    raw = record(**changes)
    rejection = check_record(raw, tiny_spec.all_columns, frozenset({"price"}))
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.field) == (reason, field)
    assert rejection.message.startswith(field)
    assert rejection.row is raw.row and rejection.source == "in.csv"


def test_message_names_the_value(tiny_spec):
    assert "'abc'" in check(tiny_spec, hour="abc").message
    assert "24" in check(tiny_spec, hour="24").message


def test_log1p_feature_needs_values_above_minus_one(tiny_spec):
    spec_without_min = [dataclasses.replace(c, min=None) if c.name == "price" else c
                        for c in tiny_spec.all_columns]
    rejection = check_record(record(price="-1"), spec_without_min, frozenset({"price"}))
    assert (rejection.reason, rejection.field) == ("out_of_range", "price")
    assert "log1p" in rejection.message
    assert check_record(record(price="-0.5"), spec_without_min, frozenset())["price"] == -0.5


def test_log1p_columns_are_log1p_features_and_log1p_labels(tiny_spec):
    assert log1p_columns(tiny_spec) == {"price", "dwell"}


def test_first_failing_column_in_spec_order_wins(tiny_spec):
    rejection = check(tiny_spec, hour="x", clicked="y")
    assert rejection.field == "hour"


def test_lenient_but_exact_conversions(tiny_spec):
    # pandas writes int columns with gaps as "35.0"; Parquet may give ints for string ids.
    row = check(tiny_spec, age="35.0", hour=" 7 ", user=123, price=3, ts=datetime.datetime(2024, 1, 1))
    assert (row["age"], row["hour"], row["user"], row["price"]) == (35, 7, "123", 3.0)
    assert row["ts"] == 1704067200
    assert check(tiny_spec, user=b"caf\xc3\xa9")["user"] == "café"
    assert check(tiny_spec, user=b"\xff").reason == "wrong_type"


def test_unparseable_line_is_rejected_with_its_error(tiny_spec):
    raw = RawRecord("in.csv", 'a,"b', None, "line is not valid CSV (unexpected end of data)")
    rejection = check_record(raw, tiny_spec.all_columns)
    assert rejection == Rejection("in.csv", 'a,"b', "unparseable_line", None,
                                  "line is not valid CSV (unexpected end of data)")


def test_validate_transform_tags_valid_and_rejected(tiny_spec, test_pipeline):
    records = [record(), record(age=""), record(hour="abc"), record(pop="nan"), record(clicked="5"),
               record(request_id=""), RawRecord("in.csv", "garbage", None, "bad")]
    with test_pipeline() as p:
        result = p | beam.Create(records) | "Validate" >> ValidateRows(tiny_spec)
        assert_that(result.valid, equal_to([TYPED, {**TYPED, "age": 30}]), label="Valid")
        reasons = result.rejected | beam.Map(lambda r: (r.reason, r.field, r.row))
        assert_that(reasons, equal_to([
            ("wrong_type", "hour", records[2].row),
            ("not_finite", "pop", records[3].row),
            ("out_of_range", "clicked", records[4].row),
            ("missing", "request_id", records[5].row),
            ("unparseable_line", None, "garbage"),
        ]), label="Rejected")
