"""The census benchmark's path on real rows: UCI file -> CSV -> Beam -> MMoE -> SavedModel."""

from __future__ import annotations

import dataclasses
import os

import pytest
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec_reader import bundled_spec_path, load_spec
from data_sets.census import OUTPUT_COLUMNS, convert, rows

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "census_income", "census-income.test.head3000.gz")


def test_rows_name_columns_and_derive_labels():
    first = next(rows(SAMPLE))
    assert first["age"] == "38" and first["class_worker"] == "Private" and first["row_id"] == "0"
    assert first["income"] == 0 and first["never_married"] == 0  # "- 50000.", married
    sample = list(rows(SAMPLE))
    assert len(sample) == 3000
    assert 0.02 < sum(r["income"] for r in sample) / 3000 < 0.12
    assert 0.3 < sum(r["never_married"] for r in sample) / 3000 < 0.55
    assert set(first) == set(OUTPUT_COLUMNS)


def test_bad_row_is_named_by_line(tmp_path):
    broken = tmp_path / "broken.csv"
    broken.write_text("38, Private\n")
    with pytest.raises(ValueError, match="broken.csv, line 1: 2 fields, expected 42"):
        list(rows(str(broken)))


@pytest.mark.slow
def test_census_spec_runs_through_pipeline_training_and_export(tmp_path):
    from mmoe.train import train
    from pipelines.run import preprocess
    from serving.export import export_saved_model

    csv_path = str(tmp_path / "census.csv")
    assert convert(SAMPLE, csv_path) == 3000
    spec = load_spec(bundled_spec_path("census_income"))
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, epochs=4, batch_size=64, learning_rate=0.006))
    workdir = Workdir(str(tmp_path / "run"))
    report = preprocess(spec, csv_path, workdir.root)
    assert report["input_rows"] == 3000 and report["rejected"]["total"] == 0
    result = train(spec, workdir, verbose=0)
    assert result.metrics["never_married"]["auc"] > 0.9, result.metrics
    assert result.metrics["income"]["auc"] > 0.8, result.metrics
    assert "ranking" not in result.metrics  # no request id in census data
    model = tf.saved_model.load(export_saved_model(spec, result.models.serving, workdir.export_base))
    assert set(model.signatures["serving_default"].structured_outputs) == {"income_probability", "never_married_probability", "score"}
