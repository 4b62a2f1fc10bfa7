"""`mmoe spec check` and side tables (feature_specs/check.py): a table's columns are looked up, so
the log may lack them; each table with an input: is sampled and checked like the log, problems
named by their key path under tables:."""

from __future__ import annotations

import os

import yaml

from feature_specs.check import check_spec
from feature_specs.infer import infer_spec
from feature_specs.table_choices import TableRequest
from log_writers import write_csv
from test_infer_tables import leaky_item_log

MOVIELENS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "movielens")
RATINGS = os.path.join(MOVIELENS, "ratings.csv")


def inferred_spec(tmp_path, movies: str) -> str:
    """The spec infer proposes for the MovieLens ratings with ``movies`` as the table, written."""
    text = infer_spec(RATINGS, {"stars": "rating"}, tables=[TableRequest("movies", os.path.join(MOVIELENS, "movies.csv"))]).yaml
    data = yaml.safe_load(text)
    data["tables"][0]["input"] = movies
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_the_inferred_spec_checks_against_its_log_and_table(tmp_path):
    assert check_spec(inferred_spec(tmp_path, os.path.join(MOVIELENS, "movies.csv")), RATINGS) == []


def test_table_problems_are_named_by_their_key_path(tmp_path):
    bad = write_csv(tmp_path / "movies.csv", [{"movieId": "one", "genres": "Drama"}] * 20)
    (problem,) = check_spec(inferred_spec(tmp_path, bad), RATINGS)
    assert str(problem).startswith("tables[0].key movieId (int): 20 of 20 sampled rows of ")
    assert "movies.csv hold a value that is not int" in str(problem)
    no_genres = write_csv(tmp_path / "nogenres.csv", [{"movieId": 1, "year": 1999}])
    (problem,) = check_spec(inferred_spec(tmp_path, no_genres), RATINGS)
    assert str(problem).startswith("tables[0].columns[0] genres (string): missing from ") and "nogenres.csv" in str(problem)


def test_a_table_input_that_matches_nothing(tmp_path):
    (problem,) = check_spec(inferred_spec(tmp_path, str(tmp_path / "none-*.csv")), RATINGS)
    assert str(problem) == f"tables[0] movies: {tmp_path / 'none-*.csv'}: no such file"


def test_a_table_feature_that_gives_the_label_away_is_warned_of(tmp_path):
    from feature_specs.check import check_report

    log, items = leaky_item_log(tmp_path)
    inferred = infer_spec(log, {"click": "clicked"}, tables=[TableRequest("items", items)], keep_features=["was_clicked"])
    assert "was_clicked" in inferred.spec.table_column_names  # kept as asked, although flagged as a leak
    path = tmp_path / "spec.yaml"
    path.write_text(inferred.yaml)
    problems, warnings = check_report(str(path), log)
    assert problems == [] and [w.column for w in warnings] == ["was_clicked"]
    assert "correlates 1.000 with the label clicked" in str(warnings[0])
