"""`mmoe spec check` on list columns: a clean log passes, bad elements are counted per column."""

import yaml

from feature_specs.check import check_spec
from list_logs import LIST_SPEC, list_rows, write_log


def spec_file(tmp_path):
    path = tmp_path / "lists.yaml"
    path.write_text(yaml.safe_dump(LIST_SPEC))
    return str(path)


def test_a_clean_log_with_lists_has_no_problem_in_any_format(tmp_path):
    for fmt in ("csv", "jsonl", "parquet"):
        data = write_log(list_rows(100, seed=1), str(tmp_path / fmt), fmt)
        assert check_spec(spec_file(tmp_path), data) == [], fmt


def test_bad_elements_are_reported_by_column(tmp_path):
    rows = list_rows(100, seed=1)
    for row in rows[:20]:
        row["cats"] = [1, 5000]  # above max 1000
    for row in rows[20:40]:
        row["cats"] = ["x"]
    problems = [p.message for p in check_spec(spec_file(tmp_path), write_log(rows, str(tmp_path), "jsonl"))]
    assert any(m.startswith("features[2] cats (int list): 20 of 100 sampled rows") and "outside [, 1000]" in m
               for m in problems), problems
    assert any(m.startswith("features[2] cats (int list): 20 of 100 sampled rows") and "not int" in m
               for m in problems), problems
