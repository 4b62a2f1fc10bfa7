"""Worked example on real data with a side table: MovieLens ratings + the movies table, from
`mmoe spec infer` to a served `:rank` that sends only the ids.

The shipped sample (tests/data/movielens: 3,443 ratings of 120 users, the 1,256 movies they rated;
README and the GroupLens license there) goes through the real CLI in this process:

    mmoe spec infer ratings.csv --label stars=rating --table movies=movies.csv --out movielens.yaml
    mmoe run --spec movielens.yaml --input ratings.csv --workdir run --epochs 1

The inferred spec is used as written: ``genres`` ("Adventure|Animation|...") is a list feature
looked up from the movies table by ``movieId``; ``title`` is left out (an id of the table); the
timestamp makes the split a time cut. ratings.csv holds no 0/1 outcome and the spec cannot
derive one (a task's label is a column as logged), so the example is regression only: the task
``stars`` predicts the rating (named apart from the column ``rating``, whose name its served
output would shadow). Then a server over a loopback port ranks one user's eval movies from
``{"context": {"userId": ...}, "candidates": [{"movieId": ...}, ...]}``; every prediction equals the
SavedModel's ``serving_default`` on the pipeline's full tf.Examples of the same rows (genres in).
"""

from __future__ import annotations

import collections
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec_reader import load_spec
from mmoe_cli.main import main
from serving.client import Client
from serving.server import make_server

pytestmark = pytest.mark.slow

MOVIELENS = os.path.join(os.path.dirname(__file__), "data", "movielens")
RATINGS = os.path.join(MOVIELENS, "ratings.csv")
MOVIES = os.path.join(MOVIELENS, "movies.csv")
NAME = "movielens_tables"


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    root = tmp_path_factory.mktemp("movielens_tables")
    spec_path = str(root / f"{NAME}.yaml")
    assert main(["spec", "infer", RATINGS, "--label", "stars=rating", "--table", f"movies={MOVIES}",
                 "--name", NAME, "--out", spec_path]) == 0
    assert main(["spec", "check", spec_path, RATINGS]) == 0  # the step infer prints next: log and table fit
    workdir = Workdir(str(root / "run"))
    assert main(["run", "--spec", spec_path, "--input", RATINGS, "--workdir", workdir.root, "--epochs", "1",
                 "--quiet"]) == 0
    with open(workdir.report_json, encoding="utf-8") as handle:
        report = json.load(handle)
    export = sorted(glob.glob(os.path.join(workdir.export_base, NAME, "*")))[-1]
    return load_spec(spec_path), workdir, report, export


def eval_examples(workdir: Workdir) -> list[tf.train.Example]:
    files = sorted(glob.glob(workdir.split_pattern("eval")))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def value(example: tf.train.Example, name: str):
    feature = example.features.feature[name]
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value)
    return [v.decode() for v in values] if kind == "bytes_list" else values


def test_the_inferred_spec_joins_the_movies_table(movielens):
    spec, _, report, _ = movielens
    (movies,) = spec.tables
    assert (movies.key, movies.input, movies.missing_key) == ("movieId", MOVIES, "default")
    assert spec.table_column_names == {"genres"} and spec.column("genres").list.separator == "|"
    assert [f.name for f in spec.model_features] == ["userId", "movieId", "genres"]
    assert [(t.name, t.label, t.kind) for t in spec.tasks] == [("stars", "rating", "regression")]
    assert (spec.split.method, spec.split.key) == ("timestamp", "timestamp")
    assert report["input_rows"] == 3443 == report["written"]["total"] + report["rejected"]["total"]
    assert report["rejected"]["total"] == 0
    assert report["tables"]["movies"]["looked_up"] == 3443 and report["tables"]["movies"]["missing_key"] == 0
    assert report["tables"]["movies"]["rows"] == 1256


def test_rank_with_ids_only_equals_the_savedmodel_on_the_full_examples(movielens):
    spec, workdir, _, export = movielens
    examples = eval_examples(workdir)
    by_user = collections.defaultdict(list)
    for example in examples:
        by_user[value(example, "userId")[0]].append(example)
    user, rows = max(by_user.items(), key=lambda item: len(item[1]))
    rows = rows[:20]
    assert len(rows) >= 5 and all(value(r, "genres") for r in rows)  # the Examples carry the joined genres

    model = tf.saved_model.load(export)
    expected = model.signatures["serving_default"](examples=tf.constant([r.SerializeToString() for r in rows]))
    expected = {name: tensor.numpy() for name, tensor in expected.items()}

    candidates = [{"movieId": value(r, "movieId")[0]} for r in rows]
    with make_server(os.path.dirname(os.path.dirname(export)), poll_seconds=0) as server:
        ranked = Client(server.url, NAME).rank({"userId": user}, candidates)
    assert sorted(r["index"] for r in ranked) == list(range(len(rows)))
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    order = [r["index"] for r in ranked]
    np.testing.assert_allclose([r["stars"] for r in ranked], expected["stars"][order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, expected["score"][order], rtol=1e-5, atol=1e-6)
    # the looked-up genres matter: the same candidates with other genres sent explicitly score otherwise
    with make_server(os.path.dirname(os.path.dirname(export)), poll_seconds=0) as server:
        sent = Client(server.url, NAME).rank({"userId": user}, [{**c, "genres": ["Documentary"]} for c in candidates])
    assert any(abs(a["stars"] - b["stars"]) > 1e-7 for a, b in zip(sorted(sent, key=lambda r: r["index"]),
                                                                     sorted(ranked, key=lambda r: r["index"])))
