"""Side tables at serving: the table snapshot inside the SavedModel; requests that send only the ids
score as the in-process model on the joined rows (no skew), and a feature sent explicitly wins."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.example_proto import Example
from feature_specs.spec import LIST_PADDING
from feature_specs.spec_reader import spec_from_dict
from mmoe.data import split_files
from mmoe.evaluate import collect_predictions
from serving.table_lookup import NOT_SENT, read_snapshot
from test_export import STANDALONE_SCORER
from test_list_features import post

MOVIES = 30  # movies 0..29 in the table; impressions also show 30..33, which it lacks
GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]


def table_spec(movies_csv: str) -> dict:
    return {
        "name": "tables",
        "features": [{"name": "movie_id", "type": "int", "transform": "vocabulary", "embedding_dim": 4},
                     {"name": "user", "type": "string", "transform": "vocabulary", "embedding_dim": 4},
                     {"name": "genres", "transform": "vocabulary", "embedding_dim": 4},
                     {"name": "year", "transform": "zscore"},
                     {"name": "studio", "transform": "hashing", "num_bins": 16, "embedding_dim": 4}],
        "columns": [{"name": "like", "type": "int", "min": 0, "max": 1},
                    {"name": "stars", "type": "float", "min": 0, "max": 5}],
        "tables": [{"name": "movies", "key": "movie_id", "input": movies_csv,
                    "columns": [{"name": "genres", "type": "string", "list": {"separator": "|", "max_length": 3}},
                                {"name": "year", "type": "int", "required": False, "default": 1900},
                                {"name": "studio", "type": "string", "required": False, "default": "none"}]}],
        "tasks": [{"name": "like", "label": "like", "kind": "binary"},
                  {"name": "rating", "label": "stars", "kind": "regression"}],
        "ranking": {"weights": {"like": 1.0}},
        "split": {"key": "user", "eval_fraction": 0.3},
        "model": {"num_experts": 2, "expert_units": [8], "tower_units": [4]},
        "training": {"epochs": 1, "batch_size": 64},
    }


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    from mmoe.train import train
    from pipelines.run import preprocess
    from serving.export import export_saved_model

    root = tmp_path_factory.mktemp("table_lookups")
    rng = random.Random(5)
    lines = ["movie_id,genres,year,studio"]
    for m in range(MOVIES):
        lines.append(f"{m},{'|'.join(rng.sample(GENRES, rng.randint(1, 3)))},{1950 + m},s{m % 4}")
    (root / "movies.csv").write_text("\n".join(lines) + "\n")
    rows = ["movie_id,user,like,stars"]
    for _ in range(600):
        movie = rng.randrange(MOVIES + 4)
        like = int(rng.random() < (0.8 if movie % 3 == 0 else 0.2))
        rows.append(f"{movie},u{rng.randrange(40)},{like},{rng.choice([1.0, 2.5, 4.0, 5.0])}")
    (root / "log.csv").write_text("\n".join(rows) + "\n")
    spec = spec_from_dict(table_spec(str(root / "movies.csv")))
    workdir = Workdir(str(root / "work"))
    report = preprocess(spec, str(root / "log.csv"), workdir)
    result = train(spec, workdir, verbose=0)
    snapshots = {"movies": read_snapshot(workdir.table_snapshot("movies"))}
    export_path = export_saved_model(spec, result.models.serving, workdir.export_base, table_snapshots=snapshots)
    return spec, workdir, report, result, export_path


def examples(workdir: Workdir) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(split_files(workdir, "eval"), compression_type="GZIP")]


def ids_only(serialized: bytes, drop=("genres", "year", "studio")) -> bytes:
    example = Example.FromString(serialized)
    for name in drop:
        del example.features.feature[name]
    return example.SerializeToString()


def test_missing_keys_were_joined_with_defaults(table_run):
    _, _, report, _, _ = table_run
    tables = report["tables"]["movies"]
    assert tables["missing_key"] > 0 and tables["looked_up"] + tables["missing_key"] == report["input_rows"]
    assert report["reconciled"]


def test_ids_only_examples_score_as_the_in_process_model(table_run, tmp_path):
    """The skew test of the lookup path: a TensorFlow-only process scores eval Examples stripped
    of every table feature; the in-process model scored the joined rows."""
    spec, workdir, _, result, export_path = table_run
    expected = collect_predictions(spec, result.models.serving, split_files(workdir, "eval"))
    stripped = tmp_path / "ids-00000.tfrecord.gz"
    with tf.io.TFRecordWriter(str(stripped), options="GZIP") as writer:
        for record in examples(workdir):
            writer.write(ids_only(record))
    script = tmp_path / "score.py"
    script.write_text(STANDALONE_SCORER)
    run = subprocess.run([sys.executable, str(script), export_path, str(tmp_path / "ids-*.tfrecord.gz")],
                         capture_output=True, text=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = json.loads(run.stdout)["outputs"]
    for name in ("like_probability", "rating", "score"):
        np.testing.assert_allclose(np.array(outputs[name]), expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _raw(rows: list[dict], width: int = 3) -> dict:
    def padded(lists):
        return np.array([list(v)[:width] + [LIST_PADDING["string"]] * (width - len(list(v)[:width])) for v in lists],
                        dtype=object)
    return {"movie_id": tf.constant([r["movie_id"] for r in rows], tf.int64),
            "user": tf.constant([r["user"] for r in rows]),
            "genres": tf.constant(padded([r.get("genres", []) for r in rows])),
            "year": tf.constant([r.get("year", NOT_SENT["int"]) for r in rows], tf.int64),
            "studio": tf.constant([r.get("studio", NOT_SENT["string"]) for r in rows])}


def test_predict_raw_looks_up_what_is_not_sent_and_an_explicit_value_wins(table_run):
    _, workdir, _, _, export_path = table_run
    model = tf.saved_model.load(export_path)
    predict = model.signatures["predict_raw"]
    table = {row["movie_id"]: row for row in read_snapshot(workdir.table_snapshot("movies"))}
    ids = [{"movie_id": m, "user": "u1"} for m in (0, 3, 7, MOVIES + 1)]
    joined = [{**r, **({k: v for k, v in table[r["movie_id"]].items() if k != "movie_id"} if r["movie_id"] in table
                       else {"year": 1900, "studio": "none"})} for r in ids]
    looked_up, explicit = predict(**_raw(ids)), predict(**_raw(joined))
    np.testing.assert_allclose(looked_up["score"].numpy(), explicit["score"].numpy(), rtol=1e-6)
    other = [{**r, "year": 2020, "genres": ["Horror"], "studio": "s9"} for r in ids]
    sent = predict(**_raw(other))["score"].numpy()
    assert not np.allclose(sent, looked_up["score"].numpy())
    by_example = model.signatures["serving_default"](examples=tf.constant([_example(r) for r in other]))
    np.testing.assert_allclose(by_example["score"].numpy(), sent, rtol=1e-5)


def _example(row: dict) -> bytes:
    feature = {"movie_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[row["movie_id"]])),
               "user": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["user"].encode()])),
               "year": tf.train.Feature(int64_list=tf.train.Int64List(value=[row["year"]])),
               "studio": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["studio"].encode()])),
               "genres": tf.train.Feature(bytes_list=tf.train.BytesList(value=[g.encode() for g in row["genres"]]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_the_snapshot_travels_with_the_saved_model(table_run, tmp_path):
    _, workdir, _, _, export_path = table_run
    os.rename(workdir.table_snapshot("movies"), tmp_path / "moved.jsonl")
    try:
        model = tf.saved_model.load(export_path)
        out = model.signatures["predict_raw"](**_raw([{"movie_id": 2, "user": "u3"}]))
        assert np.isfinite(out["score"].numpy()).all()
    finally:
        os.rename(tmp_path / "moved.jsonl", workdir.table_snapshot("movies"))


@pytest.fixture(scope="module")
def table_server(table_run):
    from serving.server import make_server

    _, workdir, _, _, _ = table_run
    with make_server(workdir.export_base, poll_seconds=0, max_candidates=100) as running:
        yield running


def test_rank_takes_candidates_with_only_the_id(table_run, table_server):
    _, workdir, _, _, export_path = table_run
    table = {row["movie_id"]: row for row in read_snapshot(workdir.table_snapshot("movies"))}
    movies = [1, 4, 9, 12, MOVIES + 2]
    status, body = post(table_server.url, "/v1/models/tables:rank",
                        {"context": {"user": "u2"}, "candidates": [{"movie_id": m} for m in movies]})
    assert status == 200, body
    joined = [{"movie_id": m, "user": "u2", **({k: v for k, v in table[m].items() if k != "movie_id"} if m in table
                                               else {"year": 1900, "studio": "none"})} for m in movies]
    expected = tf.saved_model.load(export_path).signatures["predict_raw"](**_raw(joined))["score"].numpy()
    got = [r["score"] for r in sorted(body["results"], key=lambda r: r["index"])]
    np.testing.assert_allclose(np.array(got, dtype=float), expected, rtol=1e-5)
    # a candidate that sends a table feature itself is scored with it
    status, mixed = post(table_server.url, "/v1/models/tables:rank",
                         {"context": {"user": "u2"}, "candidates": [{"movie_id": 1, "year": 2020, "genres": ["Horror"]},
                                                                    {"movie_id": 1}]})
    assert status == 200, mixed
    scores = {r["index"]: r["score"] for r in mixed["results"]}
    sent = tf.saved_model.load(export_path).signatures["predict_raw"](
        **_raw([{**joined[0], "year": 2020, "genres": ["Horror"]}]))["score"].numpy()
    np.testing.assert_allclose([scores[0], scores[1]], [sent[0], expected[0]], rtol=1e-5)


def test_rest_predict_on_serving_default_takes_ids_only_examples(table_run, table_server):
    import base64

    _, workdir, _, _, export_path = table_run
    records = examples(workdir)[:5]
    body = {"instances": [{"b64": base64.b64encode(ids_only(r)).decode()} for r in records]}
    status, answer = post(table_server.url, "/v1/models/tables:predict", body)
    assert status == 200, answer
    expected = tf.saved_model.load(export_path).signatures["serving_default"](examples=tf.constant(records))
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]], expected["score"].numpy(), rtol=1e-5)
