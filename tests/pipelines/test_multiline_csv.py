"""Issue 22 item 8: a quoted CSV field that holds a line break is part of one record, in the pipeline
(through Beam) and in the sampler of `mmoe spec infer/check`; broken quoting costs one row."""

import csv
import gzip
import io
import json

import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_specs.artifacts import Workdir, preprocess_problem
from feature_specs.csv_records import csv_records, text_lines
from feature_specs.sample import read_sample
from pipelines import preprocess
from pipelines.files import read_text
from pipelines.read import ReadRecords
from pipelines.records import RawRecord

# No lone \r: csv.writer leaves it unquoted with a \n line terminator, where csv.reader (not Beam, not
# the pipeline) takes it for a line break.
FIELD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=12)


def records_of(data: bytes, width: int, **kwargs) -> list:
    return list(csv_records(text_lines([data]), width, "f.csv", **kwargs))


def csv_bytes(rows, line_break="\n") -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator=line_break).writerows(rows)
    return out.getvalue().encode("utf-8")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(FIELD, min_size=3, max_size=3), min_size=1, max_size=12), st.sampled_from(["\n", "\r\n"]))
def test_records_written_by_pythons_csv_module_read_back_whole(rows, line_break):
    data = csv_bytes(rows, line_break)
    got = [r for r in records_of(data, 3) if not r.blank]
    expected = [row for row in csv.reader(io.StringIO(data.decode("utf-8"), newline="")) if row]
    assert [r.fields for r in got] == expected
    assert all(r.error is None for r in got)


ONE_LINE_FIELD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(ONE_LINE_FIELD, min_size=2, max_size=2), min_size=1, max_size=10), st.data())
def test_a_stray_quote_costs_its_own_line_only(rows, data):
    body = csv_bytes(rows).splitlines(keepends=True)  # one line per record (quotes and commas quoted)
    at = data.draw(st.integers(0, len(body)), label="at")
    stray = data.draw(st.sampled_from([b'"', b'"open,x', b'a,"b', b'"x" y,z', b'1,"2,"3"']), label="stray")
    got = records_of(b"".join(body[:at] + [stray + b"\n"] + body[at:]), 2)
    assert [r.fields for r in got] == [*rows[:at], None, *rows[at:]]
    assert got[at].text == stray.decode() and "not valid CSV" in got[at].error


def test_a_stray_quote_before_a_multiline_record_costs_its_own_line_only():
    got = records_of(b'"open,x\na,"b\nc"\nd,e\n', 2)
    assert [r.fields for r in got] == [None, ["a", "b\nc"], ["d", "e"]]
    assert "is not closed by the lines after it into one record of 2 field(s)" in got[0].error


def test_line_breaks_inside_quotes_are_kept_as_read():
    got = records_of(b'1,"a\r\nb",3\r\n4,"",""""\n7,8,9', 3)
    assert [r.fields for r in got] == [["1", "a\r\nb", "3"], ["4", "", '"'], ["7", "8", "9"]]
    assert got[0].text == '1,"a\r\nb",3'


def test_an_open_quote_runs_at_most_max_record_bytes():
    lines = [b'1,"never closed\n'] + [b"%d,x,y\n" % i for i in range(100)] + [b'"late",b,c\n', b'"z,b,c\n']
    got = records_of(b"".join(lines), 3, max_record_bytes=200)
    assert got[0].fields is None and "within 200 bytes" in got[0].error and got[0].text == '1,"never closed'
    assert [r.fields for r in got[1:101]] == [[str(i), "x", "y"] for i in range(100)]
    assert [r.fields for r in got[101:]] == [["late", "b", "c"], None]  # the last one opens a quote to the end
    assert len(got) == len(lines)
    closed_late = b'1,"closed\n' + b"x" * 300 + b'\nlate"\n'  # one record of 317 bytes
    assert [r.fields for r in records_of(closed_late, 2, max_record_bytes=400)] == [["1", "closed\n" + "x" * 300 + "\nlate"]]
    assert [r.fields for r in records_of(closed_late, 2, max_record_bytes=200)] == [None, None, None]


def test_a_literal_quote_in_an_unquoted_field_still_reads_as_before():
    got = records_of(b'1,5\'11",3\n4,5,6\n', 3)
    assert [r.fields for r in got] == [["1", "5'11\"", "3"], ["4", "5", "6"]]


def test_invalid_utf8_inside_a_quoted_multiline_field_is_one_rejected_record():
    got = records_of(b'1,"a\xff\nb",3\n4,5,6\n', 3)
    assert [r.fields for r in got] == [None, ["4", "5", "6"]]
    assert "not valid UTF-8" in got[0].error and got[0].text == '1,"a\\xff\nb",3'


@pytest.fixture
def multiline_log(tmp_path):
    """header + 3,000 records of (id, note, n); every 100th note holds a line break, one record opens a
    quote it never closes (its own rejected row)."""
    rows = [[f"r{i}", f"line one\nline two {i}" if i % 100 == 0 else f"n{i}", str(i)] for i in range(3000)]
    data = csv_bytes([["id", "note", "n"]] + rows[:1500]) + b'r-bad,"unclosed,1\n' + csv_bytes(rows[1500:])
    (tmp_path / "log.csv").write_bytes(data)
    (tmp_path / "log2.csv.gz").write_bytes(gzip.compress(data))
    return tmp_path, rows


def test_beam_reads_each_quoted_multiline_record_once(multiline_log, test_pipeline):
    tmp_path, rows = multiline_log
    path = str(tmp_path / "log.csv")
    with test_pipeline() as p:
        records = p | ReadRecords(str(tmp_path / "log*.csv*"), "csv")
        assert_that(records, equal_to([
            RawRecord(name, text, {"id": i, "note": note, "n": n})
            for name in (path, str(tmp_path / "log2.csv.gz"))
            for (i, note, n), text in zip(rows, (csv_bytes([row]).decode()[:-1] for row in rows))
        ] + [
            RawRecord(name, 'r-bad,"unclosed,1', None,
                      'line is not valid CSV (unexpected end of data); the quoted field it opens is not closed by '
                      'the lines after it into one record of 3 field(s) within 1,048,576 bytes')
            for name in (path, str(tmp_path / "log2.csv.gz"))
        ]))


def test_the_sampler_sees_the_same_records(multiline_log):
    tmp_path, rows = multiline_log
    sample = read_sample(str(tmp_path / "log.csv"), max_rows=5000)
    assert sample.rows == [dict(zip(["id", "note", "n"], row)) for row in rows]
    assert sample.unparsed_lines == 1 and sample.exhausted


@pytest.mark.slow
def test_preprocess_counts_3000_records_as_3000_input_rows(tmp_path, clicklog_spec):
    header = [c.name for c in clicklog_spec.all_columns]
    rows = []
    for i in range(3000):
        values = {"user_id": f"u{i % 50}", "item_id": f"i{i % 70}", "item_category": f"c{i % 5}",
                  "device": "ios", "hour": str(i % 24), "user_age": "30", "item_price": "2.5",
                  "item_popularity": "0.5", "position": "1", "request_id": f"r{i // 5}",
                  "timestamp": str(1000 + i), "clicked": str(i % 2), "dwell_seconds": "1.5"}
        if i == 10:
            values["item_category"] = "c\nmultiline"
        rows.append([values[name] for name in header])
    (tmp_path / "log.csv").write_bytes(csv_bytes([header] + rows))
    workdir = Workdir(str(tmp_path / "work"))
    report = preprocess(clicklog_spec, str(tmp_path / "log.csv"), workdir)
    assert report["input_rows"] == 3000 and report["rejected"]["total"] == 0
    assert report["written"]["total"] == 3000 and report["reconciled"]
    assert report["status"] == "complete"
    assert json.loads(read_text(workdir.report_json))["status"] == "complete"
    assert preprocess_problem(read_text(workdir.report_json)) is None
