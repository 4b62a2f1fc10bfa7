"""`mmoe spec infer` proposes list-valued columns as list features, with the separator it found,
and the proposed spec reads the same log through the pipeline without a reject."""

from __future__ import annotations

import pytest

from feature_specs.infer import infer_spec
from feature_specs.spec import ListSpec, field_default
from list_logs import list_rows, write_log
from log_writers import write_csv

LABELS = {"click": "clicked", "engagement": "dwell"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_lists_are_proposed_with_their_separator_and_element_type(tmp_path, fmt):
    path = write_log(list_rows(300, seed=2), str(tmp_path), fmt)
    inferred = infer_spec(path, LABELS, group_by="request_id")
    tags, cats = inferred.spec.column("tags"), inferred.spec.column("cats")
    assert (tags.dtype, cats.dtype) == ("string", "int")
    assert tags.list.separator == field_default(ListSpec, "separator")  # "," (CSV) or a JSON array / Parquet list
    assert cats.list.separator == (";" if fmt != "parquet" else field_default(ListSpec, "separator"))  # text vs a list
    assert tags.transform == "vocabulary" and tags.list.max_length == field_default(ListSpec, "max_length")
    assert "list of strings" in inferred.choice("tags").reason and "pooled by mean" in inferred.choice("tags").reason


def test_a_longer_list_than_the_default_gets_a_max_length_holding_it(tmp_path):
    rows = [{"tags": "|".join(f"t{j}" for j in range(i % 30)), "x": float(i), "clicked": i % 2} for i in range(200)]
    inferred = infer_spec(write_csv(tmp_path / "long.csv", rows), {"click": "clicked"})
    tags = inferred.spec.column("tags")
    assert tags.list == ListSpec(separator="|", max_length=29)
    assert "longest in the sample: 29" in inferred.choice("tags").reason


def test_lists_of_floats_are_left_out_with_the_reason(tmp_path):
    rows = [{"scores": ";".join(f"{0.5 + j}" for j in range(1 + i % 3)), "x": float(i), "clicked": i % 2}
            for i in range(100)]
    choice = infer_spec(write_csv(tmp_path / "f.csv", rows), {"click": "clicked"}).choice("scores")
    assert choice.role == "excluded" and choice.flag == "list"
    assert "list features hold string or int elements" in choice.reason


def test_the_inferred_spec_reads_the_log_without_a_reject(tmp_path):
    from pipelines.run import preprocess

    path = write_log(list_rows(200, seed=4), str(tmp_path / "raw"), "csv")
    inferred = infer_spec(path, LABELS, group_by="request_id")
    report = preprocess(inferred.spec, path, str(tmp_path / "run"))
    assert report["rejected"]["total"] == 0 and report["input_rows"] == 200
    with open(tmp_path / "run" / "artifacts" / "vocabularies" / "tags.txt") as handle:
        assert set(handle.read().split()) <= {f"t{i}" for i in range(12)}


def test_an_int_list_with_negative_elements_is_proposed_as_text_and_reads_without_a_reject(tmp_path):
    from pipelines.run import preprocess

    rows = [{"codes": ";".join(str(c) for c in range(-1, i % 4)), "x": float(i), "clicked": i % 2} for i in range(120)]
    path = write_csv(tmp_path / "neg.csv", rows)
    inferred = infer_spec(path, {"click": "clicked"})
    assert inferred.spec.column("codes").dtype == "string" and "read as text" in inferred.choice("codes").reason
    report = preprocess(inferred.spec, path, str(tmp_path / "run"))
    assert report["rejected"]["total"] == 0
