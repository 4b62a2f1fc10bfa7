"""MovieLens: the ratings + movies join, the earlier-rows-only context, and the spec on real rows."""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

from feature_specs.errors import UserError
from feature_specs.spec_reader import bundled_spec_path, load_spec
from data_sets.movielens import (
    GENRES, LIKE_THRESHOLD, NO_GENRE, OUTPUT_COLUMNS, PRIOR_LIKE, PRIOR_RATING, PRIOR_WEIGHT, MovieLensError,
    convert, genre_column, log_rows, read_movies, read_ratings, time_quantile,
)

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "movielens")
MOVIES = {
    "1": {"genre": "Comedy", "genre_count": 1, "year": 1995, **{genre_column(g): int(g == "Comedy") for g in GENRES}},
    "2": {"genre": "Drama", "genre_count": 1, "year": 2001, **{genre_column(g): int(g == "Drama") for g in GENRES}},
}


def smoothed(values, prior):
    return round((sum(values) + prior * PRIOR_WEIGHT) / (len(values) + PRIOR_WEIGHT), 4)


def test_movies_give_first_genre_year_and_multi_hot(tmp_path):
    path = tmp_path / "movies.csv"
    path.write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
                    '2,"Whiplash, Again (2014) ",Sci-Fi\n3,Untitled,(no genres listed)\n', encoding="utf-8")
    movies = read_movies(str(path))
    assert movies["1"]["genre"] == "Adventure" and movies["1"]["genre_count"] == 3 and movies["1"]["year"] == 1995
    assert movies["1"]["genre_animation"] == 1 and movies["1"]["genre_comedy"] == 0
    assert movies["2"]["year"] == 2014 and movies["2"]["genre_sci_fi"] == 1
    assert movies["3"] == {"genre": NO_GENRE, "genre_count": 0, "year": 0, **{genre_column(g): 0 for g in GENRES}}


def test_context_counts_only_strictly_earlier_ratings():
    ratings = [(10, "u", "1", 5.0), (20, "u", "2", 2.0), (20, "v", "1", 4.0), (30, "u", "1", 3.0), (30, "v", "2", 1.0)]
    rows = list(log_rows(ratings, MOVIES))
    first, tie_u, tie_v, last_u, last_v = rows
    assert (first["user_prior_count"], first["movie_prior_count"]) == (0, 0)
    assert first["user_prior_mean"] == PRIOR_RATING and first["user_prior_like_rate"] == PRIOR_LIKE
    # the two ratings at t=20 do not see each other, only the one at t=10
    assert tie_u["user_prior_count"] == 1 and tie_u["user_prior_mean"] == smoothed([5.0], PRIOR_RATING)
    assert tie_u["movie_prior_count"] == 0
    assert tie_v["user_prior_count"] == 0 and tie_v["movie_prior_count"] == 1
    assert tie_v["movie_prior_mean"] == smoothed([5.0], PRIOR_RATING)
    assert last_u["user_prior_count"] == 2 and last_u["user_prior_mean"] == smoothed([5.0, 2.0], PRIOR_RATING)
    assert last_u["user_prior_like_rate"] == smoothed([1, 0], PRIOR_LIKE)
    assert last_u["movie_prior_count"] == 2 and last_u["movie_prior_mean"] == smoothed([5.0, 4.0], PRIOR_RATING)
    assert last_v["movie_prior_count"] == 1 and last_v["movie_prior_mean"] == smoothed([2.0], PRIOR_RATING)
    assert [r["like"] for r in rows] == [1, 0, 1, 0, 0] and [r["stars"] for r in rows] == [5.0, 2.0, 4.0, 3.0, 1.0]


def test_bad_input_is_a_user_error_naming_where():
    with pytest.raises(MovieLensError, match="movieId 9 .*user u.* not in movies.csv"):
        list(log_rows([(1, "u", "9", 3.0)], MOVIES))
    with pytest.raises(MovieLensError, match="out of time order"):
        list(log_rows([(5, "u", "1", 3.0), (4, "u", "2", 3.0)], MOVIES))
    assert issubclass(MovieLensError, UserError)


def test_bad_ratings_file_names_file_and_line(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,four,101\n")
    with pytest.raises(MovieLensError, match=r"ratings.csv, line 3: rating 'four'"):
        read_ratings(str(path))
    path.write_text("userId,movieId,stars,timestamp\n")
    with pytest.raises(MovieLensError, match="no column 'rating'"):
        read_ratings(str(path))


def test_sample_converts_in_time_order_with_context_recomputed_by_pandas(tmp_path):
    out = str(tmp_path / "movielens.csv")
    assert convert(SAMPLE, out) == 3443
    table = pd.read_csv(out, dtype={"user_id": str, "movie_id": str})
    assert tuple(table.columns) == OUTPUT_COLUMNS
    assert table["timestamp"].is_monotonic_increasing
    raw = pd.read_csv(os.path.join(SAMPLE, "ratings.csv"), dtype={"userId": str, "movieId": str})
    assert len(table) == len(raw) and table["user_id"].nunique() == 120
    assert (table["like"] == (table["stars"] >= LIKE_THRESHOLD)).all()
    # every context value from the raw ratings strictly before the row's timestamp, by brute force
    rng = np.random.default_rng(0)
    for i in rng.choice(len(table), size=60, replace=False):
        row = table.iloc[i]
        earlier = raw[raw["timestamp"] < row["timestamp"]]
        mine, its = earlier[earlier["userId"] == row["user_id"]], earlier[earlier["movieId"] == row["movie_id"]]
        assert row["user_prior_count"] == len(mine) and row["movie_prior_count"] == len(its)
        assert row["user_prior_mean"] == pytest.approx(smoothed(mine["rating"].tolist(), PRIOR_RATING), abs=1e-4)
        assert row["user_prior_like_rate"] == pytest.approx(
            smoothed((mine["rating"] >= LIKE_THRESHOLD).astype(int).tolist(), PRIOR_LIKE), abs=1e-4)
        assert row["movie_prior_mean"] == pytest.approx(smoothed(its["rating"].tolist(), PRIOR_RATING), abs=1e-4)
    limited = str(tmp_path / "limited.csv")
    assert convert(SAMPLE, limited, limit_users=10) == len(raw[raw["userId"].isin(sorted(set(raw["userId"]), key=int)[:10])])


def test_time_quantile_reads_the_written_order(tmp_path):
    out = str(tmp_path / "movielens.csv")
    convert(SAMPLE, out)
    with open(out, newline="") as handle:
        stamps = [int(r["timestamp"]) for r in csv.DictReader(handle)]
    assert time_quantile(out, 0.8) == stamps[int(0.8 * len(stamps))]
    assert time_quantile(out, 1.0) == stamps[-1]


def test_spec_declares_every_written_column_and_splits_on_time():
    spec = load_spec(bundled_spec_path("movielens"))
    declared = {f.name for f in spec.features} | {c.name for c in spec.columns}
    assert declared | {"user_id", "movie_id"} == set(OUTPUT_COLUMNS)
    assert spec.split.method == "timestamp" and spec.split.key == "timestamp"
    assert [(t.name, t.label, t.kind) for t in spec.tasks] == [("like", "like", "binary"), ("rating", "stars", "regression")]
    assert "stars" not in {f.name for f in spec.features} and "like" not in {f.name for f in spec.features}


def test_sample_runs_through_pipeline_training_and_export(tmp_path):
    import tensorflow as tf

    from feature_specs.artifacts import Workdir
    from mmoe.train import train
    from pipelines.run import preprocess
    from serving.export import export_saved_model

    csv_path = str(tmp_path / "movielens.csv")
    convert(SAMPLE, csv_path)
    spec = load_spec(bundled_spec_path("movielens"))
    cutoff = time_quantile(csv_path, 0.8)
    spec = dataclasses.replace(spec, split=dataclasses.replace(spec.split, cutoff=cutoff),
                               training=dataclasses.replace(spec.training, epochs=2, batch_size=128))
    workdir = Workdir(str(tmp_path / "run"))
    report = preprocess(spec, csv_path, workdir.root)
    assert report["input_rows"] == 3443 and report["rejected"]["total"] == 0
    table = pd.read_csv(csv_path)
    assert report["written"]["train"] == int((table["timestamp"] < cutoff).sum())
    result = train(spec, workdir, verbose=0)
    assert result.metrics["like"]["auc"] > 0.6, result.metrics["like"]
    assert 0.5 < result.metrics["rating"]["calibration"] < 1.5, result.metrics["rating"]
    assert result.metrics["rating"]["rmse_stars"] > 0.0  # predictions are not read back as labels
    model = tf.saved_model.load(export_saved_model(spec, result.models.serving, workdir.export_base))
    assert set(model.signatures["serving_default"].structured_outputs) == {"like_probability", "rating", "score"}
