"""A behaviour history end to end: the generated log with a drifting interest -> Beam derives
``clicked_categories`` -> training (pooled by attention to the candidate's category, DIN) -> the
SavedModel; at serving the client sends the history
as a list, and the REST server's ``:rank`` scores a request as the SavedModel scores its
written Examples (no skew between the derived feature and the sent one)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_sets.clicklog import generate_clicklog
from feature_specs.artifacts import Workdir
from feature_specs.example_proto import Example
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict
from mmoe.data import split_files
from mmoe.evaluate import collect_predictions
from serving.client import Client
from serving.export import export_saved_model
from serving.server import make_server

HISTORY = {"name": "clicked_categories", "type": "string", "transform": "vocabulary", "embedding_dim": 4,
           "list": {"max_length": 5, "pooling": "attention", "target": "item_category"},
           "history": {"user": "user_id", "item": "item_category", "time": "timestamp", "positive": "clicked"}}


def history_spec():
    data = load_spec(bundled_spec_path("clicklog")).to_dict()
    data["features"].append(HISTORY)
    data["model"].update(num_experts=2, expert_units=[8], tower_units=[4])
    data["training"].update(epochs=1, batch_size=256, checkpoint_every_steps=0)
    return spec_from_dict(data)


@pytest.fixture(scope="module")
def history_run(tmp_path_factory):
    from mmoe.train import train
    from pipelines.run import preprocess

    spec = history_spec()
    workdir = Workdir(str(tmp_path_factory.mktemp("history")))
    generate_clicklog(workdir.raw_dir, rows=4000, seed=2, interest_weight=1.5, corrupt_fraction=0.0)
    preprocess(spec, workdir.raw_dir + "/*.parquet", workdir)
    result = train(spec, workdir, verbose=0)
    export_path = export_saved_model(spec, result.models.serving, workdir.export_base)
    return spec, workdir, result, export_path


def eval_examples(workdir: Workdir) -> list[tuple[bytes, dict]]:
    """``(serialized, {feature: values})`` of every eval Example."""
    out = []
    for record in tf.data.TFRecordDataset(split_files(workdir, "eval"), compression_type="GZIP"):
        example = Example()
        example.ParseFromString(record.numpy())
        values = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values[name] = [v.decode() if isinstance(v, bytes) else v for v in getattr(feature, kind).value]
        out.append((record.numpy(), values))
    return out


def test_the_derived_history_is_in_the_examples_and_the_saved_model_reads_it(history_run):
    spec, workdir, result, export_path = history_run
    examples = eval_examples(workdir)
    lengths = [len(values["clicked_categories"]) for _, values in examples]
    assert max(lengths) == 5 and min(lengths) == 0
    expected = collect_predictions(spec, result.models.serving, split_files(workdir, "eval"))
    served = tf.saved_model.load(export_path).signatures["serving_default"](
        examples=tf.constant([serialized for serialized, _ in examples]))
    np.testing.assert_allclose(served["score"].numpy().ravel(), np.ravel(expected["score"]), rtol=1e-5, atol=1e-6)


def test_rank_with_the_history_sent_as_a_list_scores_as_the_written_examples(history_run):
    spec, workdir, result, export_path = history_run
    examples = eval_examples(workdir)
    by_request = {}
    for serialized, values in examples:
        by_request.setdefault(values["request_id"][0], []).append((serialized, values))
    # a request whose user has a history
    rows = next(group for group in by_request.values() if len(group) >= 3 and group[0][1]["clicked_categories"])
    served = tf.saved_model.load(export_path).signatures["serving_default"](
        examples=tf.constant([serialized for serialized, _ in rows]))["score"].numpy().ravel()
    features = [f for f in spec.features if f.role == "feature"]
    candidates = [{f.name: (values[f.name] if f.list is not None else values[f.name][0]) for f in features}
                  for _, values in rows]
    base = workdir.export_base
    with make_server(base, poll_seconds=0) as server:
        ranked = Client(server.url, spec.name).rank({}, candidates)
    by_index = {r["index"]: r["score"] for r in ranked}
    np.testing.assert_allclose([by_index[i] for i in range(len(rows))], served, rtol=1e-5, atol=1e-6)
