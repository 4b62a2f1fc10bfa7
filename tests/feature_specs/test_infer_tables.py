"""`mmoe spec infer --table NAME[:KEY]=PATTERN` proposes side tables (feature_specs/table_choices.py):
the key, each table column profiled by the log's rules (ids, constants, leaks left out with the
reason; lists as lists), the ``tables:`` section with its join rule and input, and a spec that
the pipeline runs as written."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_specs.column_choices import MISSING_STRING
from feature_specs.infer import InferError, infer_spec
from feature_specs.spec_reader import load_spec
from feature_specs.table_choices import TableRequest
from log_writers import write_csv, write_jsonl
from mmoe_cli.main import main

MOVIELENS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "movielens")
RATINGS = os.path.join(MOVIELENS, "ratings.csv")
MOVIES = os.path.join(MOVIELENS, "movies.csv")


def shop_log(tmp_path, items: int = 40, rows: int = 600, seed: int = 0) -> tuple[str, list[dict]]:
    """A click log keyed by ``item_id`` (items ``0..items-1``); returns (path, rows)."""
    rng = np.random.default_rng(seed)
    out = [{"user_id": f"u{rng.integers(50)}", "item_id": int(rng.integers(items)), "hour": int(rng.integers(24)),
            "clicked": int(rng.random() < 0.3)} for _ in range(rows)]
    return write_csv(tmp_path / "log.csv", out), out


def item_rows(items: range, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"item_id": i, "title": f"item number {i}", "brand": f"b{i % 7}", "price": round(float(rng.gamma(2, 10)), 2),
             "shop": "main", "tags": "|".join(f"t{t}" for t in sorted(rng.choice(12, int(rng.integers(1, 4)), False)))}
            for i in items]


def test_movielens_genres_are_a_list_from_the_movies_table_and_title_is_left_out():
    inferred = infer_spec(RATINGS, {"stars": "rating"}, tables=[TableRequest("movies", MOVIES)])
    spec, table = inferred.spec, inferred.table("movies")
    assert table.key == "movieId" and (table.found, table.keyed, table.keys) == (3443, 3443, 1256)
    (movies,) = spec.tables
    assert (movies.name, movies.key, movies.input, movies.missing_key) == ("movies", "movieId", MOVIES, "default")
    assert [c.name for c in movies.columns] == ["genres"]
    genres = spec.column("genres")
    assert genres.dtype == "string" and genres.list.separator == "|"
    assert spec.table_of("genres") is movies and spec.column("movieId").dtype == "int"
    assert inferred.choice("title").flag == "id"
    assert any(line.startswith("left out title of table movies (id)") for line in inferred.summary())
    # the YAML as written is the spec
    assert "missing_key: default: every sampled key is found, and default still" in " ".join(
        line.lstrip("# ") for line in inferred.yaml.splitlines())


def test_written_yaml_loads_and_the_cli_takes_the_table_flag(tmp_path, capsys):
    out = str(tmp_path / "ml.yaml")
    assert main(["spec", "infer", RATINGS, "--label", "stars=rating", "--table", f"movies:movieId={MOVIES}",
                 "--out", out]) == 0
    assert "table movies: joined on movieId, 3,443 of 3,443" in capsys.readouterr().err
    spec = load_spec(out)
    assert [t.name for t in spec.tables] == ["movies"] and spec.table_column_names == {"genres"}
    assert main(["spec", "infer", RATINGS, "--label", "stars=rating", "--table", "movies=x.csv", "--table",
                 f"movies={MOVIES}"]) == 2
    assert "--table movies is given more than once" in capsys.readouterr().err


def test_incomplete_coverage_gives_defaults_and_the_pipeline_runs_the_spec_as_written(tmp_path):
    from pipelines.run import preprocess

    path, rows = shop_log(tmp_path)
    table_path = write_csv(tmp_path / "items.csv", item_rows(range(30)))  # items 30..39 are not in the table
    inferred = infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", table_path)])
    table = inferred.table("items")
    missing = sum(r["item_id"] >= 30 for r in rows)
    assert table.keyed - table.found == missing > 0
    spec = inferred.spec
    assert spec.tables[0].missing_key == "default"
    assert spec.column("brand").default == MISSING_STRING and spec.column("brand").required is False
    price = spec.column("price")
    assert price.required is False and price.default == pytest.approx(np.median([r["price"] for r in item_rows(range(30))]),
                                                                      rel=1e-4)
    assert spec.column("tags").list.separator == "|" and spec.column("tags").default is None
    assert (inferred.choice("title").flag, inferred.choice("shop").flag) == ("id", "constant")
    assert f"the {missing:,} impressions without a table row take each column's default" in " ".join(
        line.lstrip("# ") for line in inferred.yaml.splitlines())

    report = preprocess(spec, path, str(tmp_path / "work"))  # input: from the spec, no --table
    assert report["input_rows"] == len(rows) == report["written"]["total"] + report["rejected"]["total"]
    assert report["rejected"]["total"] == 0
    assert report["tables"]["items"]["missing_key"] == missing
    assert report["tables"]["items"]["looked_up"] == len(rows) - missing


def test_parquet_and_jsonl_tables_with_list_columns(tmp_path):
    path, _ = shop_log(tmp_path)
    items = item_rows(range(40))
    arrays = [{**r, "tags": r["tags"].split("|")} for r in items]
    pq.write_table(pa.Table.from_pylist(arrays), tmp_path / "items.parquet")
    for table_path in (str(tmp_path / "items.parquet"), write_jsonl(tmp_path / "items.jsonl", arrays)):
        spec = infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", table_path)]).spec
        assert spec.column("tags").is_list and spec.column("tags").dtype == "string", table_path
        assert spec.tables[0].input == table_path


def leaky_item_log(tmp_path) -> tuple[str, str]:
    """(log, item table): a click decided by the item, and the table's ``was_clicked`` restating it."""
    rng = np.random.default_rng(3)
    good = set(range(0, 40, 3))
    rows = [{"item_id": (i := int(rng.integers(40))), "hour": int(rng.integers(24)), "clicked": int(i in good)}
            for _ in range(800)]
    table = [{**r, "was_clicked": int(r["item_id"] in good)} for r in item_rows(range(40))]
    return write_csv(tmp_path / "log.csv", rows), write_csv(tmp_path / "items.csv", table)


def test_a_table_column_that_leaks_the_label_is_left_out(tmp_path):
    path, table = leaky_item_log(tmp_path)
    inferred = infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", table)])
    choice = inferred.choice("was_clicked")
    assert choice.flag == "leak" and "on the sampled impressions joined with the table" in choice.reason
    assert "was_clicked" not in inferred.spec.table_column_names


def test_a_column_the_log_holds_too_stays_the_logs(tmp_path):
    path, _ = shop_log(tmp_path)
    table = write_csv(tmp_path / "items.csv", [{**r, "hour": 3} for r in item_rows(range(40))])
    inferred = infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", table, "item_id")])
    hour = next(c for c in inferred.table("items").choices if c.name == "hour")
    assert hour.flag == "duplicate" and "declared there" in hour.reason
    assert inferred.spec.table_of("hour") is None and inferred.spec.column("hour").dtype == "int"


def test_a_key_left_out_of_the_log_is_declared_under_columns(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"user_id": i, "hour": int(rng.integers(24)), "clicked": int(rng.random() < 0.3)} for i in range(200)]
    path = write_csv(tmp_path / "log.csv", rows)
    users = write_csv(tmp_path / "users.csv", [{"user_id": i, "age": int(rng.integers(18, 70))} for i in range(200)])
    inferred = infer_spec(path, {"click": "clicked"}, tables=[TableRequest("users", users)])
    assert inferred.choice("user_id").flag == "id"  # one row per user in the log: not a feature
    assert "user_id" in {c.name for c in inferred.spec.columns} and inferred.spec.tables[0].key == "user_id"


@pytest.mark.parametrize("request_, message", [
    (TableRequest("items", "ITEMS", "item"), r"key 'item' is not a column of the log .*log.csv \(did you mean "
                                            r"'item_id'\?\); the log's columns are: user_id, item_id, hour, clicked"),
    (TableRequest("items", "ITEMS", "hour"), r"key 'hour' is not a column of the table .*items.csv"),
    (TableRequest("items", "ITEMS", "clicked"), r"key 'clicked' is a label of the log"),
])
def test_a_key_the_log_or_the_table_lacks_is_named(tmp_path, request_, message):
    path, _ = shop_log(tmp_path)
    table = write_csv(tmp_path / "items.csv", [{**r, "clicked": 0} for r in item_rows(range(40))])
    with pytest.raises(InferError, match=message):
        infer_spec(path, {"click": "clicked"}, tables=[TableRequest(request_.name, table, request_.key)])


def test_without_a_key_the_table_must_share_exactly_one_column(tmp_path):
    path, _ = shop_log(tmp_path)
    none = write_csv(tmp_path / "none.csv", [{"sku": i, "brand": f"b{i % 3}"} for i in range(40)])
    with pytest.raises(InferError, match=r"no column of .*none.csv \(sku, brand\) is a column of the log"):
        infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", none)])
    two = write_csv(tmp_path / "two.csv", [{"item_id": i, "user_id": f"u{i}", "brand": "b"} for i in range(40)])
    with pytest.raises(InferError, match=r"shares 2 columns with the log \(item_id, user_id\); name the key: "
                                         r"--table items:KEY="):
        infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", two)])


def test_duplicate_keys_and_keys_never_found_are_refused(tmp_path):
    path, _ = shop_log(tmp_path)
    twice = write_csv(tmp_path / "twice.csv", item_rows(range(40)) + item_rows(range(5, 6)))
    with pytest.raises(InferError, match=r"key item_id=5 is in rows 6 and 41 of .*twice.csv; a table holds one row"):
        infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", twice)])
    other = write_csv(tmp_path / "other.csv", item_rows(range(100, 140)))
    with pytest.raises(InferError, match=r"none of the 600 sampled impressions' item_id values is a key of .*other.csv"):
        infer_spec(path, {"click": "clicked"}, tables=[TableRequest("items", other)])


@pytest.mark.parametrize("text, parsed", [
    ("movies=raw/movies.csv", TableRequest("movies", "raw/movies.csv")),
    ("movies:movieId=gs://bucket/movies-*.parquet", TableRequest("movies", "gs://bucket/movies-*.parquet", "movieId")),
])
def test_table_flag_parses(text, parsed):
    assert TableRequest.parse(text) == parsed


@pytest.mark.parametrize("text", ["movies", "=x.csv", "movies:=x.csv", "2movies=x.csv", "movies:movie-id=x.csv"])
def test_table_flag_that_does_not_parse(text):
    with pytest.raises(InferError, match=r"--table"):
        TableRequest.parse(text)


def test_the_table_section_round_trips_through_the_spec_json(tmp_path):
    inferred = infer_spec(RATINGS, {"stars": "rating"}, tables=[TableRequest("movies", MOVIES)])
    data = json.loads(inferred.spec.to_json())
    assert data["tables"][0]["columns"] == [{"name": "genres", "type": "string", "required": True,
                                             "list": {"separator": "|", "max_length": 16, "too_long": "truncate",
                                                      "pooling": "mean"}}]


# -- what the MovieLens files needed of the log's rules ------------------------------------------


def test_list_elements_with_spaces_are_a_list_when_they_repeat():
    from feature_specs.profile import list_shape, profile_column

    values = ["Drama|Film-Noir", "(no genres listed)", "Comedy|Drama|Sci-Fi", "Drama", "Comedy|(no genres listed)"] * 10
    shape = list_shape(values, profile_column("genres", values).kinds)
    assert (shape.source, shape.separator, shape.distinct_elements) == ("delimited", "|", 5)


def test_camel_case_ids_are_codes_and_a_named_timestamp_from_1996_is_time():
    from feature_specs.column_choices import feature_choice
    from feature_specs.profile import profile_column
    from feature_specs.time_columns import time_unit

    ids = [str(i % 300 * 7) for i in range(900)]
    assert feature_choice(profile_column("movieId", ids)).entry["transform"] == "vocabulary"
    assert feature_choice(profile_column("movieid", ids)).entry["transform"] != "vocabulary"
    seconds = [str(829322340 + 86_400 * i) for i in range(50)]  # 1996-04-12 onwards
    assert time_unit(profile_column("timestamp", seconds)) == "seconds"
    assert time_unit(profile_column("x", seconds)) is None  # unnamed: only from 2001-09 (EPOCH_SECONDS)
