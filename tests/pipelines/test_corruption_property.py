"""Property: randomly corrupted logs lose and duplicate no row, and every reject has its reason.

Rows of the tiny spec are written as CSV lines; each row gets at most one corruption (a dropped
field, a wrong type, NaN, a negative value where the spec forbids one, a garbage line, or a
duplicate of the row before), so the expected outcome of every line is known exactly.
"""

import collections
import os
import tempfile

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.read import ReadRecords, parse_csv_line
from pipelines.records import REASONS, Rejection
from pipelines.split import SplitRows
from pipelines.validate import ValidateRows, check_record, log1p_columns

NAMES = ["user", "hour", "age", "price", "pop", "query", "position", "request_id", "ts", "clicked", "dwell"]
BASE = {"user": "u1", "hour": "7", "age": "41", "price": "9.5", "pop": "0.25", "query": "shoes",
        "position": "2", "request_id": "r0", "ts": "1700000000", "clicked": "1", "dwell": "12.5"}
NUMERIC = ["hour", "age", "price", "pop", "position", "ts", "clicked", "dwell"]
FLOATS = ["price", "pop", "dwell"]
NON_NEGATIVE = ["hour", "age", "price", "ts", "clicked", "dwell", "position"]  # min >= 0 in the spec
GARBAGE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                  max_size=30)

corruption = st.one_of(
    st.just(("none", None)),
    st.tuples(st.just("drop_field"), st.sampled_from(NAMES)),
    st.tuples(st.just("wrong_type"), st.sampled_from(NUMERIC)),
    st.tuples(st.just("nan"), st.sampled_from(FLOATS)),
    st.tuples(st.just("negative"), st.sampled_from(NON_NEGATIVE)),
    st.tuples(st.just("garbage"), GARBAGE),
    st.tuples(st.just("duplicate"), st.none()),
)
EXPECTED = {"none": None, "duplicate": None, "drop_field": "unparseable_line", "garbage": "unparseable_line",
            "wrong_type": "wrong_type", "nan": "not_finite", "negative": "out_of_range"}


def make_lines(corruptions):
    """CSV lines (header first) and, per data line, the reason it must be rejected with (or None)."""
    lines, expected, previous = [",".join(NAMES)], [], None
    for i, (kind, arg) in enumerate(corruptions):
        row = {**BASE, "request_id": f"r{i}", "user": f"u{i % 4}"}
        if kind == "duplicate" and previous is not None:
            lines.append(previous)
            expected.append(expected[-1])
            continue
        if kind == "wrong_type":
            row[arg] = "abc"
        elif kind == "nan":
            row[arg] = "nan"
        elif kind == "negative":
            row[arg] = "-5"
        fields = [row[name] for name in NAMES if not (kind == "drop_field" and name == arg)]
        line = '"' + arg if kind == "garbage" else ",".join(fields)
        lines.append(line)
        expected.append(EXPECTED[kind])
        previous = line
    return lines, expected


def outcomes(lines, spec):
    header = lines[0].split(",")
    return [check_record(parse_csv_line("log.csv", line, header), spec.all_columns, log1p_columns(spec))
            for line in lines[1:]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=1, max_size=25))
def test_every_line_gives_exactly_one_result_with_the_expected_reason(tiny_spec, corruptions):
    lines, expected = make_lines(corruptions)
    results = outcomes(lines, tiny_spec)
    assert len(results) == len(lines) - 1 == len(expected)
    valid_ids = []
    for line, result, reason in zip(lines[1:], results, expected):
        if isinstance(result, Rejection):
            assert result.reason in REASONS and result.message, result
            assert result.row == line  # the raw line, unchanged
            assert result.reason == reason, (line, result)
        else:
            assert reason is None, (line, result)
            assert set(result) == set(NAMES)
            valid_ids.append(result["request_id"])
    # duplicates are kept as they are: as many valid rows per id as good lines carry it
    good = collections.Counter(line.split(",")[NAMES.index("request_id")]
                               for line, reason in zip(lines[1:], expected) if reason is None)
    assert collections.Counter(valid_ids) == good


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=1, max_size=40))
def test_pipeline_keeps_every_row_once(tiny_spec, test_pipeline, corruptions):
    lines, _ = make_lines(corruptions)
    results = outcomes(lines, tiny_spec)
    valid = [r for r in results if not isinstance(r, Rejection)]
    rejected = [(r.row, r.reason, r.field) for r in results if isinstance(r, Rejection)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log.csv")
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write("\n".join(lines) + "\n")
        with test_pipeline() as p:
            out = p | ReadRecords(path, "csv") | ValidateRows(tiny_spec)
            train, eval_ = out.valid | SplitRows(tiny_spec.split)
            written = (train, eval_) | beam.Flatten()
            assert_that(written, equal_to(valid), label="NoValidRowLostOrDuplicated")
            assert_that(out.rejected | beam.Map(lambda r: (r.row, r.reason, r.field)), equal_to(rejected),
                        label="EveryRejectOnceWithItsReason")
