"""The batched path gives the row-at-a-time path's results: the same rejects (reason, field,
message, raw row), the same typed rows, the same split, on the corruption property test's inputs
and on values chosen to sit at the edges of the vectorized checks."""

import io
import math
import os
import tempfile

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_specs.spec_reader import spec_from_dict
from pipelines.batches import RawBatch
from pipelines.quality import Profile
from feature_specs.csv_records import csv_file_header, csv_records, text_lines
from pipelines.read import ReadRecords, raw_csv_record
from pipelines.read_batches import ReadBatches, _csv_batches
from pipelines.records import RawRecord, Rejection
from pipelines.split import SplitBatches, SplitRows, eval_mask, split_index
from pipelines.validate import ValidateRows, check_record, log1p_columns
from pipelines.validate_batches import BatchChecker, ValidateBatches
from conftest import TINY_SPEC
from test_corruption_property import corruption, make_lines


class _Blank:
    def __init__(self):
        self.count = 0

    def inc(self, n=1):
        self.count += n


def _rejection_key(r):
    return r.source, str(r.row), r.reason, r.field, r.message


def _row_results(lines, spec, source="log.csv"):
    """What the row path's CSV reader and checks make of the lines (header first) of ``source``."""
    stream = text_lines([("\n".join(lines) + "\n").encode("utf-8")])
    header = csv_file_header(next(stream), source)
    records = [raw_csv_record(source, r, header) for r in csv_records(stream, len(header), source) if not r.blank]
    return [check_record(record, spec.all_columns, log1p_columns(spec)) for record in records]


def _batched_results(text, spec, batch_rows=7):
    checker = BatchChecker(spec)
    valid, rejected, profile = [], [], Profile()
    for batch in _csv_batches(io.BytesIO(text.encode("utf-8")), "log.csv", batch_rows, _Blank()):
        table, rejections = checker.check(batch, profile)
        valid += table.to_pylist()
        rejected += rejections
    return valid, rejected, profile


def _canonical_rows(rows):
    return sorted(tuple(sorted(r.items())) for r in rows)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=1, max_size=40), st.sampled_from([1, 3, 7, 64]))
def test_batch_checks_give_the_row_checks_results(tiny_spec, corruptions, batch_rows):
    lines, _ = make_lines(corruptions)
    results = _row_results(lines, tiny_spec)
    valid, rejected, profile = _batched_results("\n".join(lines) + "\n", tiny_spec, batch_rows)
    assert _canonical_rows(valid) == _canonical_rows([r for r in results if not isinstance(r, Rejection)])
    assert sorted(map(_rejection_key, rejected)) == sorted(
        _rejection_key(r) for r in results if isinstance(r, Rejection))
    assert profile.rows == sum(1 for r in results if not (isinstance(r, Rejection) and r.reason == "unparseable_line"))


NUMBERISH = st.one_of(
    st.from_regex(r"\A-?[0-9]{1,25}(\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?\Z"),
    st.from_regex(r"\A[ +]?-?\.?[0-9_]{0,4}[ ]?\Z"),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "-0", "007", "1.", ".5", "3.4028235e38",
                     "9223372036854775807", "9223372036854775808", "-1", "-0.5", "24", "23.0", "\u0660", "\x1c"]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(NUMBERISH, NUMBERISH, NUMBERISH, NUMBERISH), min_size=1, max_size=20))
def test_text_at_the_edges_of_the_vectorized_parsing_is_typed_as_python_types_it(tiny_spec, values):
    """hour (int, 0..23), age (optional int), price (float, log1p, >= 0), pop (float)."""
    header = ["user", "hour", "age", "price", "pop", "query", "position", "request_id", "ts", "clicked", "dwell"]
    lines = [",".join(header)] + [",".join(["u", hour, age, price, pop, "q", "2", f"r{i}", "1700000000", "1", "2.5"])
                                  for i, (hour, age, price, pop) in enumerate(values)]
    results = _row_results(lines, tiny_spec)
    valid, rejected, _ = _batched_results("\n".join(lines) + "\n", tiny_spec)
    assert _canonical_rows(valid) == _canonical_rows([r for r in results if not isinstance(r, Rejection)])
    assert sorted(map(_rejection_key, rejected)) == sorted(
        _rejection_key(r) for r in results if isinstance(r, Rejection))


def test_parquet_values_of_every_arrow_type_are_checked_as_the_row_path_checks_them(tiny_spec):
    rows = {
        "user": pa.array(["a", " b", "", None, "\x1c", "ok", "x", "y"]),
        "hour": pa.array([1.0, 2.5, 3.0, float("nan"), 7.0, 23.0, 24.0, 0.0]),
        "age": pa.array([None, 5, 300, 7, 8, 9, -1, 2**40], pa.int64()),
        "price": pa.array([0.0, -0.5, float("inf"), 1e39, 2.0, 3.0, -1.0, 4.0], pa.float64()),
        "pop": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int32()),
        "query": pa.array([True, False, None, True, False, True, False, True]),
        "position": pa.array(["1", "2", " 3", "4.0", "x", "5", "6", "7"]),
        "request_id": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()),
        "ts": pa.array([1700000000] * 8, pa.int64()),
        "clicked": pa.array([0, 1, 1, 0, 1, 0, 1, 0], pa.int8()),
        "dwell": pa.array([1.5] * 8, pa.float32()),
        "extra": pa.array(list(range(8))),
    }
    table = pa.table(rows)
    records = [RawRecord("f.parquet", row, row) for row in table.to_pylist()]
    expected = [check_record(r, tiny_spec.all_columns, log1p_columns(tiny_spec)) for r in records]
    valid, rejected = BatchChecker(tiny_spec).check(RawBatch("f.parquet", table=table), Profile())
    assert _canonical_rows(valid.to_pylist()) == _canonical_rows([r for r in expected if not isinstance(r, Rejection)])
    assert sorted(map(_rejection_key, rejected)) == sorted(_rejection_key(r) for r in expected if isinstance(r, Rejection))
    # and the same rows as JSON-like records (the JSONL/TFRecord form)
    valid, rejected = BatchChecker(tiny_spec).check(RawBatch.from_records(records), Profile())
    assert _canonical_rows(valid.to_pylist()) == _canonical_rows([r for r in expected if not isinstance(r, Rejection)])
    assert sorted(map(_rejection_key, rejected)) == sorted(_rejection_key(r) for r in expected if isinstance(r, Rejection))


def test_unknown_columns_are_rejected_per_row_under_the_reject_policy():
    spec = spec_from_dict({**TINY_SPEC, "pipeline": {"unknown_columns": "reject"}})
    base = {"user": "u", "hour": 1, "age": 3, "price": 1.0, "pop": 0.5, "query": "q", "position": 1,
            "request_id": "r", "ts": 1, "clicked": 1, "dwell": 1.0}
    records = [RawRecord("e.jsonl", "line0", dict(base)), RawRecord("e.jsonl", "line1", {**base, "zzz": 1})]
    expected = [check_record(r, spec.all_columns, log1p_columns(spec), frozenset(c.name for c in spec.all_columns))
                for r in records]
    valid, rejected = BatchChecker(spec).check(RawBatch.from_records(records), Profile())
    assert valid.num_rows == 1 and [r.reason for r in rejected] == ["unknown_column"]
    assert _rejection_key(rejected[0]) == _rejection_key(expected[1])


@pytest.mark.parametrize("key", ["request_id", "hour", "price"])
def test_vectorized_split_is_the_row_split(tiny_spec, key):
    import dataclasses

    split = dataclasses.replace(tiny_spec.split, key=key)
    rows = [{"request_id": f"r{i % 17}", "hour": i % 24, "price": i / 7} for i in range(500)]
    table = pa.Table.from_pylist(rows)
    assert eval_mask(table, split).tolist() == [split_index(r, split) == 1 for r in rows]


def test_a_quoted_field_across_lines_switches_the_rest_of_the_file_to_the_row_reader(tiny_spec):
    header = "user,hour,age,price,pop,query,position,request_id,ts,clicked,dwell"
    good = "u1,7,41,9.5,0.25,shoes,2,r{},1700000000,1,12.5"
    lines = [header, good.format(0), good.format(1).replace("shoes", '"two\nlines"'), good.format(2),
             '"' + "unclosed", good.format(3), "", good.format(4).replace("shoes", '"a,b"')]
    text = "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log.csv")
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        expected = [r for r in csv_records(text_lines([text.encode()]), 11, path) if not r.blank]
        blank = _Blank()
        with open(path, "rb") as handle:
            batches = list(_csv_batches(handle, path, 2, blank))
    got = [r.row for batch in batches for r in batch.iter_records()]
    assert got == [r.text for r in expected[1:]] and blank.count == 1


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=1, max_size=40))
def test_both_pipelines_write_and_reject_the_same_rows(tiny_spec, test_pipeline, corruptions):
    lines, _ = make_lines(corruptions)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log.csv")
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write("\n".join(lines) + "\n")
        results = _row_results(lines, tiny_spec, path)
        valid = [r for r in results if not isinstance(r, Rejection)]
        train = [r for r in valid if split_index(r, tiny_spec.split) == 0]
        eval_ = [r for r in valid if split_index(r, tiny_spec.split) == 1]
        rejected = [_rejection_key(r) for r in results if isinstance(r, Rejection)]
        with test_pipeline() as p:
            rows = p | "Rows" >> ReadRecords(path, "csv") | "CheckRows" >> ValidateRows(tiny_spec)
            row_train, row_eval = rows.valid | "SplitRows" >> SplitRows(tiny_spec.split)
            batches = p | "Batches" >> ReadBatches(path, "csv", batch_rows=5) | "CheckBatches" >> ValidateBatches(tiny_spec)
            batch_train, batch_eval = batches.valid | "SplitBatches" >> SplitBatches(tiny_spec.split)
            for label, pcoll, expected in [("RowTrain", row_train, train), ("RowEval", row_eval, eval_),
                                           ("BatchTrain", batch_train | "T" >> beam.FlatMap(pa.Table.to_pylist), train),
                                           ("BatchEval", batch_eval | "E" >> beam.FlatMap(pa.Table.to_pylist), eval_)]:
                assert_that(pcoll, equal_to(expected), label=label)
            for label, pcoll in [("RowRejects", rows.rejected), ("BatchRejects", batches.rejected)]:
                assert_that(pcoll | f"Key{label}" >> beam.Map(_rejection_key), equal_to(rejected), label=label)


def test_float_text_parsed_by_arrow_equals_python_float():
    import random

    import pyarrow.compute as pc

    rng = random.Random(5)
    texts = [f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 17)}f}" for _ in range(2000)]
    texts += [f"{rng.random():.17e}" for _ in range(2000)] + [repr(math.pi), "1.", ".5", "0.1", "1e-320"]
    parsed = pc.cast(pa.array(texts), pa.float64()).to_pylist()
    assert parsed == [float(t) for t in texts]
