"""Issue 22 items 4 and 7, pipeline side: a bad input file fails before Beam starts with one line
naming it; a run that fails a check still writes report.json, marked failed with the reason, so
training can refuse the workdir (feature_specs.artifacts.preprocess_problem)."""

import json
import os

import pandas as pd
import pytest

from feature_specs.artifacts import PREPROCESS_COMPLETE, PREPROCESS_FAILED, Workdir, preprocess_problem
from feature_specs.errors import UserError
from feature_specs.input_formats import InputFileError
from feature_specs.spec_reader import spec_from_dict
from pipelines import EmptyTrainSplitError, ReconciliationError, RejectRateError, preprocess
from pipelines.files import matching_files, read_text
from pipelines.report import build_report, finish_report

NAMES = ["user", "hour", "age", "price", "pop", "query", "position", "request_id", "ts", "clicked", "dwell"]
HEADER = ",".join(NAMES)


def good_lines(n):
    return [f"u{i % 4},7,41,9.5,0.25,shoes,2,r{i},1700000000,{i % 2},12.5" for i in range(n)]


def write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def parquet(path, without=()):
    pd.DataFrame({name: [1, 2] for name in NAMES if name not in without}).to_parquet(path, index=False)
    return str(path)


def truncated(path):
    parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


BAD_INPUTS = {
    "empty file": (lambda d: write(d / "e.csv", ""), "empty file"),
    "blank first line": (lambda d: write(d / "e.csv", "\n" + "\n".join(good_lines(3))), "empty file"),
    "missing column": (lambda d: write(d / "m.csv", HEADER.replace(",dwell", "") + "\n1,2\n"),
                       r"no column\(s\) dwell required by the spec"),
    "column twice": (lambda d: write(d / "t.csv", HEADER + ",hour\n"), r"names column\(s\) hour more than once"),
    "header not UTF-8": (lambda d: write(d / "u.csv", b"us\xffer,hour\n"), "not valid UTF-8"),
    "truncated Parquet": (lambda d: truncated(d / "t.parquet"), "not a readable Parquet file"),
    "empty Parquet": (lambda d: write(d / "z.parquet", b""), "not a readable Parquet file"),
    "Parquet without a column": (lambda d: parquet(d / "m.parquet", without=["price"]),
                                 r"no column\(s\) price required by the spec"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_file_fails_before_beam_with_one_line_naming_it(tmp_path, tiny_spec, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    workdir = Workdir(str(tmp_path / "work"))
    with pytest.raises(InputFileError, match=message) as raised:
        preprocess(tiny_spec, path, workdir)
    assert isinstance(raised.value, UserError) and raised.value.exit_code == 2
    text = str(raised.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert not os.path.exists(workdir.root)  # nothing was started or written


def test_every_matched_file_is_checked_not_only_the_first(tmp_path, tiny_spec):
    write(tmp_path / "a.csv", HEADER + "\n" + "\n".join(good_lines(3)) + "\n")
    write(tmp_path / "b.csv", HEADER.replace("user,", "") + "\n")
    with pytest.raises(InputFileError, match=r"b\.csv: the file has no column\(s\) user"):
        preprocess(tiny_spec, str(tmp_path / "*.csv"), str(tmp_path / "work"))


def test_an_event_file_without_the_impression_id_fails_before_beam(tmp_path, tiny_spec):
    data = tiny_spec.to_dict()
    data["sources"] = {"impression_id": "request_id", "timestamp": "ts",
                       "events": [{"name": "clicks", "label": "clicked"}]}
    spec = spec_from_dict(data)
    impressions = write(tmp_path / "imp.csv", HEADER.replace(",clicked", "") + "\n")
    clicks = write(tmp_path / "clicks.csv", "ts,user\n1700000000,u1\n")
    with pytest.raises(InputFileError, match=r"clicks\.csv: the file has no column\(s\) request_id"):
        preprocess(spec, impressions, str(tmp_path / "work"), event_inputs={"clicks": clicks})


def counts(input_rows, train, eval_, by_reason):
    return {"input_rows": input_rows, "written": {"train": train, "eval": eval_}, "rejected_by_reason": by_reason,
            "rejected_by_field": {}}


def test_finish_report_records_the_first_failed_check():
    ok = build_report(counts(10, 7, 2, {"missing": 1}), "tiny", "in.csv", 0.0, max_reject_rate=0.2)
    assert finish_report(ok) is None and ok["status"] == PREPROCESS_COMPLETE and "failure" not in ok
    lost = build_report(counts(10, 0, 2, {"missing": 5}), "tiny", "in.csv", 0.0, max_reject_rate=0.2)
    failure = finish_report(lost)
    assert isinstance(failure, ReconciliationError) and not isinstance(failure, UserError)  # a defect, not input
    assert lost["status"] == PREPROCESS_FAILED and lost["failure"] == str(failure)
    eval_only = build_report(counts(3, 0, 3, {}), "tiny", "day2/*.csv", 0.0)
    failure = finish_report(eval_only)
    assert isinstance(failure, EmptyTrainSplitError) and failure.exit_code == 2
    assert eval_only["failure"].startswith("day2/*.csv: no rows were written to the train split (3 input row(s)")
    assert preprocess_problem(json.dumps(eval_only)) == f"the last `mmoe preprocess` failed: {eval_only['failure']}"


@pytest.mark.slow
def test_a_run_over_the_reject_limit_writes_a_failed_report_that_training_refuses(tmp_path, tiny_spec):
    path = write(tmp_path / "log.csv", "\n".join([HEADER] + good_lines(8) + ["not,a,row"] * 2) + "\n")
    workdir = Workdir(str(tmp_path / "work"))
    with pytest.raises(RejectRateError) as raised:
        preprocess(tiny_spec, path, workdir, max_reject_rate=0.1)
    assert raised.value.exit_code == 1
    report = json.loads(read_text(workdir.report_json))
    assert report["status"] == PREPROCESS_FAILED and report["failure"] == str(raised.value)
    assert "\n" not in report["failure"] and report["input_rows"] == 10 and report["reconciled"]
    assert matching_files(workdir.split_pattern("train"))  # the outputs were written ...
    problem = preprocess_problem(read_text(workdir.report_json))  # ... and training is told why not to use them
    assert problem.startswith("the last `mmoe preprocess` failed: 2 of 10 input rows (20.00%) were rejected")


@pytest.mark.slow
def test_a_header_only_csv_fails_naming_the_input(tmp_path, tiny_spec):
    path = write(tmp_path / "header_only.csv", HEADER + "\n\n")
    workdir = Workdir(str(tmp_path / "work"))
    with pytest.raises(EmptyTrainSplitError, match="header_only.csv: no rows were written to the train split "
                                                   r"\(0 input row\(s\), 0 rejected, 0 written to eval\): the input "
                                                   "holds no data rows") as raised:
        preprocess(tiny_spec, path, workdir)
    assert isinstance(raised.value, UserError)
    report = json.loads(read_text(workdir.report_json))
    assert report["status"] == PREPROCESS_FAILED and report["failure"] == str(raised.value)
    assert "no rows were written" in preprocess_problem(read_text(workdir.report_json))
