"""Reading CSV (per-file headers, bad lines kept) and Parquet into RawRecords."""

import gzip

import pandas as pd
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.options import infer_input_format
from pipelines.input_checks import check_header, read_csv_header
from pipelines.read import ReadRecords, parse_csv_line
from pipelines.records import RawRecord


def test_parse_csv_line():
    header = ["a", "b", "c"]
    assert parse_csv_line("f", b'1,"x, y",3', header) == RawRecord("f", '1,"x, y",3', {"a": "1", "b": "x, y", "c": "3"})
    assert parse_csv_line("f", "1,,", header).values == {"a": "1", "b": "", "c": ""}
    too_few = parse_csv_line("f", "1,2", header)
    assert too_few.values is None and too_few.row == "1,2" and "2 field(s)" in too_few.error
    broken = parse_csv_line("f", '1,"2,3', header)
    assert broken.values is None and "not valid CSV" in broken.error
    not_utf8 = parse_csv_line("f", b"1,\xff,3", header)
    assert not_utf8.values is None and not_utf8.row == "1,\\xff,3" and "UTF-8" in not_utf8.error


def test_read_csv_header(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufeffa, b ,c\r\n1,2,3\n".encode("utf-8"))
    assert read_csv_header(str(tmp_path / "bom.csv")) == ["a", "b", "c"]
    with gzip.open(tmp_path / "z.csv.gz", "wt") as handle:
        handle.write("x,y\n1,2\n")
    assert read_csv_header(str(tmp_path / "z.csv.gz")) == ["x", "y"]
    (tmp_path / "dup.csv").write_text("a,b,a\n")
    with pytest.raises(ValueError, match="more than once"):
        read_csv_header(str(tmp_path / "dup.csv"))
    with pytest.raises(ValueError, match="required by the spec"):
        check_header(["a", "b"], ["a", "c"], "f.csv")


def test_infer_input_format():
    assert infer_input_format("logs/*.csv") == "csv"
    assert infer_input_format("gs://b/logs/part-*.csv.gz") == "csv"
    assert infer_input_format("raw/impressions-*.parquet") == "parquet"
    with pytest.raises(ValueError, match="--input_format"):
        infer_input_format("logs/*")


def test_read_csv_uses_each_files_own_header_and_keeps_bad_lines(tmp_path, test_pipeline):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("id,v\n1,x\n\n2,y,extra\n")
    second.write_text("v,id\r\nz,3\r\n")
    with test_pipeline() as p:
        records = p | ReadRecords(str(tmp_path / "*.csv"), "csv")
        assert_that(records, equal_to([
            RawRecord(str(first), "1,x", {"id": "1", "v": "x"}),
            RawRecord(str(first), "2,y,extra", None, f"line has 3 field(s), the header of {first} names 2"),
            RawRecord(str(second), "z,3", {"v": "z", "id": "3"}),
        ]))


def test_read_parquet_rows_as_dicts_with_source(tmp_path, test_pipeline):
    path = tmp_path / "part-0.parquet"
    pd.DataFrame({"id": [1, 2], "v": ["x", None]}).to_parquet(path, index=False)
    with test_pipeline() as p:
        records = p | ReadRecords(str(tmp_path / "*.parquet"), "parquet")
        assert_that(records, equal_to([
            RawRecord(str(path), {"id": 1, "v": "x"}, {"id": 1, "v": "x"}),
            RawRecord(str(path), {"id": 2, "v": None}, {"id": 2, "v": None}),
        ]))
