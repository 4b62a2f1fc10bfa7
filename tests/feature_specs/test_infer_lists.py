"""`mmoe spec infer` recognises list-valued columns (feature_specs/profile.py ``list_shape``):
delimited strings, JSON array text, JSON arrays and Parquet lists are proposed as list features
(with the separator found); text that merely holds commas is not a list."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_specs.infer import infer_spec
from feature_specs.profile import list_shape, profile_column
from log_writers import write_csv, write_jsonl


def rows_with(values: list) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"tag": v, "x": float(rng.normal()), "clicked": int(rng.random() < 0.3)} for v in values]


def tag_lists(n: int = 300, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(40, size=int(rng.integers(1, 4)), replace=False).tolist()) for _ in range(n)]


@pytest.mark.parametrize("separator", [",", "|", ";"])
def test_delimited_strings_are_a_list(tmp_path, separator):
    values = [separator.join(str(t) for t in tags) for tags in tag_lists()]
    inferred = infer_spec(write_csv(tmp_path / "d.csv", rows_with(values)), {"click": "clicked"})
    choice = inferred.choice("tag")
    assert choice.role == "feature" and choice.flag == ""
    assert choice.reason.startswith(f"a list of ints (strings joined by {separator!r}; ")
    assert inferred.spec.column("tag").list.separator == separator and inferred.spec.column("tag").dtype == "int"


def test_json_array_text_in_csv_is_a_list(tmp_path):
    values = [json.dumps([f"c{t}" for t in tags]) for tags in tag_lists()]
    choice = infer_spec(write_csv(tmp_path / "j.csv", rows_with(values)), {"click": "clicked"}).choice("tag")
    assert choice.role == "feature" and choice.reason.startswith("a list of strings (JSON array text; ")


def test_jsonl_arrays_and_parquet_lists_are_lists(tmp_path):
    values = tag_lists()
    pq.write_table(pa.Table.from_pylist(rows_with(values)), tmp_path / "p.parquet")
    for path in (write_jsonl(tmp_path / "a.jsonl", rows_with(values)), str(tmp_path / "p.parquet")):
        inferred = infer_spec(path, {"click": "clicked"})
        assert inferred.choice("tag").role == "feature", path
        assert inferred.choice("tag").reason.startswith("a list of ints (arrays; ")
        assert inferred.spec.column("tag").is_list


def test_the_shape_counts_elements():
    values = ["1,2", "3", "1,2,3", "4,5"]
    shape = list_shape(values, profile_column("t", values).kinds)
    assert (shape.source, shape.separator, shape.element_type) == ("delimited", ",", "int")
    assert shape.mean_length == pytest.approx(2.0) and shape.distinct_elements == 5


@pytest.mark.parametrize("values", [
    ["New York, USA", "Paris, France", "Rio de Janeiro, Brazil", "Nice"],  # text: spaces inside the parts
    ["a", "b", "c", "a"],                                        # no separator at all
    ["3,14", "2,72", "1,41", "0,58"],                            # decimal commas: two parts in every value
])
def test_text_that_is_not_a_list(values):
    assert list_shape(values, profile_column("t", values).kinds) is None


def test_a_rare_comma_keeps_a_string_feature(tmp_path):
    values = [f"s{i % 30}" for i in range(300)]
    values[5] = "s1,s2"
    inferred = infer_spec(write_csv(tmp_path / "r.csv", rows_with(values)), {"click": "clicked"})
    assert inferred.choice("tag").role == "feature"
