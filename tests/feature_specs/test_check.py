"""`mmoe spec check` (feature_specs/check.py): the spec, and a data sample against it."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_specs.check import check_spec
from feature_specs.spec_reader import bundled_spec_path
from mmoe_cli.main import main
from log_writers import write_csv

SPEC = """
name: tiny
features:
  - {name: user_id, type: string, transform: vocabulary}
  - {name: hour, type: int, transform: vocabulary, min: 0, max: 23}
  - {name: price, type: float, transform: log1p, min: 0}
columns:
  - {name: request_id, type: string}
  - {name: clicked, type: int}
tasks:
  - {name: click, label: clicked, kind: binary}
ranking: {group_by: request_id, kind: weighted_sum, weights: {click: 1.0}}
split: {method: hash, key: request_id}
"""


def rows(n: int = 100) -> list[dict]:
    return [{"request_id": f"r{i // 5}", "user_id": f"u{i % 7}", "hour": i % 24, "price": 1.5 * i, "clicked": i % 2}
            for i in range(n)]


@pytest.fixture
def spec_path(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return str(path)


def messages(spec: str, data: str | None = None) -> list[str]:
    return [str(p) for p in check_spec(spec, data)]


def test_a_fitting_file_has_no_problems(spec_path, tmp_path):
    assert messages(spec_path) == []
    assert messages(spec_path, write_csv(tmp_path / "ok.csv", rows())) == []


def test_spec_errors_name_the_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.replace("transform: log1p", "transform: bucket"))
    [problem] = messages(str(path))
    assert "bad.yaml: features[2].transform: unknown value 'bucket'" in problem


def test_missing_columns_are_named_with_the_file_and_a_suggestion(spec_path, tmp_path):
    data = [{("click" if k == "clicked" else k): v for k, v in r.items() if k != "hour"} for r in rows()]
    problems = messages(spec_path, write_csv(tmp_path / "renamed.csv", data))
    assert len(problems) == 2
    assert problems[0].startswith("features[1] hour (int): missing from ") and "renamed.csv" in problems[0]
    assert "its columns are: request_id, user_id, price, click" in problems[0]
    assert problems[1].startswith("columns[1] clicked (int): missing from ") and "(did you mean 'click'?)" in problems[1]


def test_mistyped_column_is_named_with_an_example(spec_path, tmp_path):
    data = rows()
    for row in data[:30]:
        row["hour"] = "evening"
    [problem] = messages(spec_path, write_csv(tmp_path / "typed.csv", data))
    assert problem.startswith("features[1] hour (int): 30 of 100 sampled rows of ")
    assert "is not int (e.g. 'evening')" in problem


def test_a_few_bad_rows_under_the_reject_rate_are_not_a_problem(spec_path, tmp_path):
    data = rows()
    for row in data[:3]:  # 3% < max_reject_rate 5%: the pipeline rejects them and goes on
        row["price"] = "n/a"
    assert messages(spec_path, write_csv(tmp_path / "few.csv", data)) == []


def test_empty_required_values_and_values_out_of_range(spec_path, tmp_path):
    data = rows()
    for row in data[:10]:
        row["user_id"] = ""
    for row in data[10:20]:
        row["hour"] = 30
    problems = messages(spec_path, write_csv(tmp_path / "gaps.csv", data))
    assert any(p.startswith("features[0] user_id (string): 10 of 100 sampled rows") and "required" in p for p in problems)
    assert any(p.startswith("features[1] hour (int): 10 of 100 sampled rows") and "outside [0, 23]" in p for p in problems)


def test_binary_label_must_be_zero_one(spec_path, tmp_path):
    data = rows()
    data[0]["clicked"] = 2
    [problem] = messages(spec_path, write_csv(tmp_path / "label.csv", data))
    assert problem.startswith("tasks[0] click: the binary label 'clicked' must be 0/1") and problem.endswith("holds 2")


def test_parquet_types_are_checked_too(spec_path, tmp_path):
    data = rows()
    for row in data:
        row["user_id"] = 0.5  # a float where the spec declares a string
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "floats.parquet")
    [problem] = messages(spec_path, str(tmp_path / "floats.parquet"))
    assert problem.startswith("features[0] user_id (string): 100 of 100 sampled rows")


def test_undeclared_columns_when_the_spec_rejects_them(tmp_path):
    path = tmp_path / "strict.yaml"
    path.write_text(SPEC + "pipeline: {unknown_columns: reject}\n")
    data = [dict(r, extra=1) for r in rows()]
    [problem] = messages(str(path), write_csv(tmp_path / "extra.csv", data))
    assert "unknown_columns is reject" in problem and "undeclared column(s) extra" in problem


def test_unreadable_data_is_a_problem_not_a_crash(spec_path, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    [problem] = messages(spec_path, str(tmp_path / "empty.csv"))
    assert "empty.csv: empty file" in problem


def test_bundled_example_specs_are_valid():
    for name in ("clicklog", "census_income", "aliexpress"):
        assert messages(bundled_spec_path(name)) == []
    data = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "aliexpress", "*.csv")
    assert messages(bundled_spec_path("aliexpress"), data) == []


def test_cli_exit_codes_and_printed_problems(spec_path, tmp_path, capsys):
    assert main(["spec", "check", spec_path, write_csv(tmp_path / "ok.csv", rows())]) == 0
    assert "valid" in capsys.readouterr().out
    broken = write_csv(tmp_path / "broken.csv", [{k: v for k, v in r.items() if k != "price"} for r in rows()])
    assert main(["spec", "check", spec_path, broken]) == 2
    err = capsys.readouterr().err
    assert "mmoe spec check: features[2] price (float): missing from" in err
