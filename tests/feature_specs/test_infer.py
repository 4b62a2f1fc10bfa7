"""Spec inference (feature_specs/infer.py, `mmoe spec infer`): small files written here, plus the
real AliExpress and census samples checked against their documented schemas."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from feature_specs.infer import InferError, embedding_dim, infer_spec, read_sample
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict
from data_sets.census import convert
from mmoe_cli.main import main
from log_writers import write_csv, write_jsonl

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
ALIEXPRESS = os.path.join(DATA, "aliexpress", "*.csv")
CENSUS = os.path.join(DATA, "census_income", "census-income.test.head3000.gz")


def impression_rows(n: int = 400, seed: int = 0) -> list[dict]:
    """Impressions in requests of 4, with one column of each kind inference tells apart."""
    rng = np.random.default_rng(seed)
    clicked = (rng.random(n) < 0.3).astype(int)
    dwell = np.where(clicked == 1, np.round(np.exp(rng.normal(3, 1, n)), 1), 0.0)
    return [
        {
            "request_id": f"r{i // 4}",
            "impression_key": 100_000 + i,                       # unique per row: an id
            "event_time": 1_700_000_000 + 60 * (i // 4),       # epoch seconds: a timestamp
            "user_id": f"u{rng.integers(20)}",                  # text: vocabulary
            "hour": int(rng.integers(24)),                      # int codes 0..23: vocabulary
            "price": round(float(np.exp(rng.normal(3, 1.2))), 2),  # skewed, >= 0: log1p
            "score": round(float(rng.normal(5, 2)), 4),         # symmetric: zscore
            "spread": round(float(rng.standard_t(1.2)), 4),      # heavy tails, negatives: quantile
            "site": "web",                                      # constant: left out
            "click_copy": float(clicked[i]),                    # the label again: a leak
            "clicked": int(clicked[i]),
            "dwell_seconds": float(dwell[i]),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def impressions(tmp_path_factory) -> str:
    return write_csv(tmp_path_factory.mktemp("log") / "impressions.csv", impression_rows())


@pytest.fixture(scope="module")
def inferred(impressions):
    return infer_spec(impressions, {"click": "clicked", "engagement": "dwell_seconds"}, group_by="request_id")


@pytest.fixture(scope="module")
def census_csv(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("census") / "census.csv")
    convert(CENSUS, path)
    return path


# -- choices -----------------------------------------------------------------------------------


def test_features_get_types_and_transforms_by_distribution(inferred):
    features = {f.name: f for f in inferred.spec.features}
    assert (features["user_id"].dtype, features["user_id"].transform) == ("string", "vocabulary")
    assert (features["hour"].dtype, features["hour"].transform) == ("int", "vocabulary")
    assert (features["price"].dtype, features["price"].transform, features["price"].min) == ("float", "log1p", 0)
    assert (features["score"].dtype, features["score"].transform) == ("float", "zscore")
    assert (features["spread"].dtype, features["spread"].transform) == ("float", "quantile")
    assert features["spread"].num_buckets == 16
    assert features["hour"].embedding_dim == embedding_dim(24) == 13


def test_ids_timestamps_constants_and_leaks_are_left_out_and_flagged(inferred):
    flags = {c.name: c.flag for c in inferred.choices if c.role == "excluded"}
    assert flags == {"impression_key": "id", "event_time": "timestamp", "site": "constant", "click_copy": "leak"}
    declared = {c.name for c in inferred.spec.all_columns}
    assert not declared & (set(flags) - {"event_time"})
    assert "event_time" not in {f.name for f in inferred.spec.features}  # declared as the (time) split key only
    for name, flag in flags.items():
        assert any(line.startswith(f"# {name} (") and flag in line for line in inferred.yaml.splitlines()), name


def test_tasks_ranking_and_split(inferred):
    click, engagement = inferred.spec.tasks
    assert (click.kind, click.loss, click.label) == ("binary", "binary_crossentropy", "clicked")
    assert (engagement.kind, engagement.loss, engagement.label_transform, engagement.mask, engagement.unit) == (
        "regression", "ziln", "none", "clicked", "seconds")  # a skewed, non-negative label: its mean
    # masked by clicked: weighted by the clicked share of the rows, so an observed row weighs one click row
    share = float(np.mean([int(row["clicked"]) == 1 for row in impression_rows()]))
    assert (click.weight, engagement.weight) == (1.0, max(0.01, round(share, 2))) and 0 < engagement.weight < 1
    assert f"observed on {share:.0%} of the rows, so weight {engagement.weight:g}" in inferred.yaml
    ranking = inferred.spec.ranking
    assert (ranking.group_by, ranking.kind) == ("request_id", "product")
    assert dict(ranking.weights) == {"click": 1.0, "engagement": 1.0}
    split = inferred.spec.split  # a timestamp in the log: a time cut (tests/feature_specs/test_infer_time.py)
    assert (split.method, split.key) == ("timestamp", "event_time")
    assert (inferred.spec.column("clicked").min, inferred.spec.column("clicked").max) == (0, 1)


def test_yaml_loads_as_written_and_explains_every_entry(inferred, tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(inferred.yaml)
    assert load_spec(str(path)) == inferred.spec
    lines = inferred.yaml.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  - {"):
            name = yaml.safe_load(line.strip()[2:])["name"]
            before = lines[max(0, i - 4):i]
            assert any(l.lstrip().startswith("#") and name in l for l in before), line
    for key in ("ranking:", "split:", "model:"):
        index = next(i for i, l in enumerate(lines) if l.startswith(key))
        assert lines[index - 1].startswith("#"), key


def test_a_masked_regression_needs_its_label_zero_wherever_the_click_is_zero(tmp_path):
    rows = impression_rows()
    rows[0].update(clicked=0, dwell_seconds=12.0)
    inferred = infer_spec(write_csv(tmp_path / "log.csv", rows), {"click": "clicked", "engagement": "dwell_seconds"})
    assert inferred.spec.task("engagement").mask is None


def test_a_second_binary_label_is_a_binary_task_without_a_mask(tmp_path):
    rows = impression_rows()
    for row in rows:
        row["bought"] = int(row["clicked"] and row["price"] > 30)
    inferred = infer_spec(write_csv(tmp_path / "log.csv", rows), {"click": "clicked", "purchase": "bought"})
    purchase = inferred.spec.task("purchase")
    assert (purchase.kind, purchase.mask) == ("binary", None)
    assert inferred.spec.ranking.kind == "weighted_sum"
    assert "post-click" in inferred.tasks[1].reason


def test_high_cardinality_strings_are_hashed(tmp_path):
    rng = np.random.default_rng(1)
    rows = [{"query": f"q{rng.integers(1600)}", "clicked": int(rng.random() < 0.5)} for _ in range(3000)]
    feature = infer_spec(write_csv(tmp_path / "q.csv", rows), {"click": "clicked"}).spec.features[0]
    assert feature.transform == "hashing"
    assert feature.num_bins >= 4 * 1000 and feature.num_bins & (feature.num_bins - 1) == 0
    assert feature.embedding_dim == 32


def test_missing_values_make_a_column_optional_with_a_default(tmp_path):
    rows = impression_rows()
    for row in rows[::10]:
        row["score"] = ""
        row["user_id"] = ""
    features = {f.name: f for f in infer_spec(write_csv(tmp_path / "gaps.csv", rows), {"click": "clicked"}).spec.features}
    assert (features["score"].required, isinstance(features["score"].default, float)) == (False, True)
    assert (features["user_id"].required, features["user_id"].default) == (False, "__missing__")
    assert features["hour"].required


def test_embedding_width_grows_with_the_fourth_root_of_cardinality_and_is_capped():
    assert [embedding_dim(c) for c in (2, 10, 81, 10_000, 10**7)] == [2, 10, 18, 32, 32]


def test_csv_gzip_jsonl_and_parquet_give_the_same_types(tmp_path):
    rows = impression_rows(120)
    plain = write_csv(tmp_path / "a.csv", rows)
    with open(plain, "rb") as source, gzip.open(tmp_path / "a.csv.gz", "wb") as target:
        target.write(source.read())
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    labels = {"click": "clicked"}
    types = []
    for path in (plain, str(tmp_path / "a.csv.gz"), write_jsonl(tmp_path / "a.jsonl", rows), str(tmp_path / "a.parquet")):
        types.append({c.name: c.dtype for c in infer_spec(path, labels).spec.all_columns})
    assert all(t == types[0] for t in types[1:]), types


def test_lists_are_list_features_and_booleans_are_left_out(tmp_path):
    rows = [dict(r, tags=["a", "b"][: i % 3], is_new=bool(i % 2)) for i, r in enumerate(impression_rows(60))]
    inferred = infer_spec(write_jsonl(tmp_path / "nested.jsonl", rows), {"click": "clicked"})
    assert (inferred.choice("tags").role, inferred.choice("is_new").flag) == ("feature", "unsupported")
    assert inferred.spec.column("tags").is_list
    assert "write booleans as 0/1" in inferred.choice("is_new").reason


def test_sampling_stops_at_max_rows(tmp_path):
    path = write_csv(tmp_path / "big.csv", impression_rows(1000))
    assert len(read_sample(path, max_rows=150).rows) == 150
    inferred = infer_spec(path, {"click": "clicked"}, max_rows=150)
    assert inferred.sample_rows == 150 and "the first 150 rows" in inferred.yaml


def test_a_glob_reads_several_files(tmp_path):
    rows = impression_rows(200)
    write_csv(tmp_path / "part-0.csv", rows[:100])
    write_csv(tmp_path / "part-1.csv", rows[100:])
    sample = read_sample(str(tmp_path / "part-*.csv"))
    assert len(sample.files) == 2 and len(sample.rows) == 200 and sample.exhausted


# -- errors ------------------------------------------------------------------------------------


def test_label_column_not_in_the_file_names_it_and_lists_the_columns(impressions):
    with pytest.raises(InferError, match=r"label column 'click' of task 'click' is not in .*impressions.csv "
                                         r"\(did you mean 'clicked'\?\); its columns are: request_id, .*dwell_seconds"):
        infer_spec(impressions, {"click": "click"})


def test_group_by_column_not_in_the_file(impressions):
    with pytest.raises(InferError, match="group-by column 'session' is not in .*impressions.csv"):
        infer_spec(impressions, {"click": "clicked"}, group_by="session")


def test_a_zero_one_label_after_a_first_that_is_not_is_refused(impressions):
    with pytest.raises(InferError, match=r"label column 'clicked' of task 'click' is 0/1 but follows the regression "
                                         r"task 'dwell': give the 0/1 \(click-like\) label first"):
        infer_spec(impressions, {"dwell": "dwell_seconds", "click": "clicked"})


def test_a_first_label_that_is_not_zero_one_makes_a_regression_only_spec(impressions):
    inferred = infer_spec(impressions, {"dwell": "dwell_seconds"})
    assert [t.kind for t in inferred.spec.tasks] == ["regression"]
    assert inferred.spec.ranking.kind == "weighted_sum" and dict(inferred.spec.ranking.weights) == {"dwell": 1.0}
    assert "the spec is regression only" in inferred.tasks[0].reason


def test_a_regression_task_named_as_a_column_is_refused(impressions):
    # its predictions are served and evaluated under the task's name: they would shadow the column
    with pytest.raises(InferError, match=r"task 'dwell_seconds' is a regression, .* name the task otherwise, "
                                         r"e.g. --label dwell_seconds_pred=dwell_seconds"):
        infer_spec(impressions, {"click": "clicked", "dwell_seconds": "dwell_seconds"})


def test_two_valued_label_that_is_not_zero_one(tmp_path):
    rows = [{"x": i % 7, "clicked": i % 2, "liked": 1 if i % 3 else -1} for i in range(50)]
    with pytest.raises(InferError, match=r"label column 'liked' of task 'like' has two values \(-1, 1\) "
                                         r"but a binary label must be 0/1"):
        infer_spec(write_csv(tmp_path / "l.csv", rows), {"click": "clicked", "like": "liked"})


def test_text_label(impressions):
    with pytest.raises(InferError, match="label column 'user_id' of task 'click' does not hold numbers"):
        infer_spec(impressions, {"click": "user_id"})


@pytest.mark.parametrize("name, content", [("empty.csv", ""), ("header.csv", "a,clicked\n"), ("blank.jsonl", "\n\n")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InferError, match=f"{name}: empty file"):
        infer_spec(str(path), {"click": "clicked"})


@pytest.mark.parametrize("name", ["log.txt", "log", "log.csv.lz4"])
def test_unsupported_format(tmp_path, name):
    (tmp_path / name).write_text("x")
    with pytest.raises(InferError, match=f"{name}: unsupported format"):
        infer_spec(str(tmp_path / name), {"click": "clicked"})


def test_no_such_file(tmp_path):
    with pytest.raises(InferError, match="nothing.csv: no such file"):
        infer_spec(str(tmp_path / "nothing.csv"), {"click": "clicked"})


def test_a_header_naming_a_column_twice(tmp_path):
    (tmp_path / "twice.csv").write_text("a,clicked,a\n1,0,2\n")
    with pytest.raises(InferError, match="twice.csv: the header names column\\(s\\) a more than once"):
        infer_spec(str(tmp_path / "twice.csv"), {"click": "clicked"})


def test_no_label_lists_the_columns(impressions):
    with pytest.raises(InferError, match="name at least one label: --label click=COLUMN \\(columns: request_id, "):
        infer_spec(impressions, {})


# -- the command -------------------------------------------------------------------------------


def test_cli_prints_a_spec_that_loads(impressions, capsys):
    code = main(["spec", "infer", impressions, "--label", "click=clicked", "--group-by", "request_id", "--max-rows", "200"])
    assert code == 0
    spec = spec_from_dict(yaml.safe_load(capsys.readouterr().out))
    assert spec.task_names == ("click",) and spec.ranking.group_by == "request_id"


def test_cli_writes_the_spec_to_a_file(impressions, tmp_path, capsys):
    out = tmp_path / "specs" / "mine.yaml"
    assert main(["spec", "infer", impressions, "--label", "click=clicked", "--name", "mine", "--out", str(out)]) == 0
    assert load_spec(str(out)).name == "mine"
    assert f"wrote {out}" in capsys.readouterr().err


def test_cli_error_exits_2_with_the_message(impressions, capsys):
    assert main(["spec", "infer", impressions, "--label", "click=nope"]) == 2
    assert "mmoe spec infer: label column 'nope' of task 'click' is not in" in capsys.readouterr().err


# -- real samples against their documented schemas -------------------------------------------


def test_aliexpress_types_match_its_readme():
    # tests/data/aliexpress/README.md: search_id int (request id), categorical_1..16 int
    # (label-encoded), numerical_1..63 float in [0, 1], click and conversion int 0/1.
    inferred = infer_spec(ALIEXPRESS, {"click": "click", "conversion": "conversion"}, group_by="search_id")
    assert inferred.sample_rows == 320
    spec = inferred.spec
    assert spec.column("search_id").dtype == "int" and spec.ranking.group_by == "search_id"
    for i in range(1, 17):
        feature = spec.column(f"categorical_{i}")
        assert (feature.dtype, feature.transform) == ("int", "vocabulary"), feature
    for i in range(1, 64):
        choice = inferred.choice(f"numerical_{i}")
        if i in (58, 59, 60):  # all "0" in the sample: read as int, left out as constant
            assert (choice.role, choice.flag) == ("excluded", "constant")
        else:
            assert spec.column(f"numerical_{i}").dtype == "float"
    assert [(t.label, t.kind) for t in spec.tasks] == [("click", "binary"), ("conversion", "binary")]


def test_aliexpress_bundled_spec_matches_what_inference_proposes():
    bundled = load_spec(bundled_spec_path("aliexpress"))
    inferred = infer_spec(ALIEXPRESS, {"click": "click", "conversion": "conversion"}, group_by="search_id",
                          name="aliexpress").spec
    assert bundled.features == inferred.features and bundled.columns == inferred.columns
    assert bundled.tasks == inferred.tasks and bundled.split == inferred.split


def test_census_types_match_the_census_spec(census_csv):
    # feature_specs/census_income.yaml declares the census columns data_sets/census.py writes.
    documented = {c.name: c.dtype for c in load_spec(bundled_spec_path("census_income")).all_columns}
    inferred = infer_spec(census_csv, {"income": "income", "never_married": "never_married"})
    declared = {c.name: c.dtype for c in inferred.spec.all_columns}
    shared = set(declared) & set(documented) - {"row_id"}
    assert len(shared) >= 35
    assert {n: declared[n] for n in shared} == {n: documented[n] for n in shared}
    assert inferred.choice("marital_stat").flag == "leak"  # never married, restated
    assert inferred.choice("row_id").flag == "id" and inferred.spec.split.key == "row_id"

