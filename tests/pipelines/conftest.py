"""Shared fixtures of the pipeline tests: tiny specs and an in-process test pipeline."""

import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline

from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict

TINY_SPEC = {
    "name": "tiny",
    "features": [
        {"name": "user", "type": "string", "transform": "vocabulary", "top_k": 3, "min_count": 2},
        {"name": "hour", "type": "int", "transform": "vocabulary", "min": 0, "max": 23},
        {"name": "age", "type": "int", "transform": "zscore", "required": False, "default": 30,
         "min": 0, "max": 120},
        {"name": "price", "type": "float", "transform": "log1p", "min": 0},
        {"name": "pop", "type": "float", "transform": "quantile", "num_buckets": 4},
        {"name": "query", "type": "string", "transform": "hashing", "num_bins": 8},
        {"name": "position", "type": "int", "transform": "vocabulary", "role": "bias", "min": 1,
         "serving_value": 1},
    ],
    "columns": [
        {"name": "request_id", "type": "string"},
        {"name": "ts", "type": "timestamp", "min": 0},
        {"name": "clicked", "type": "int", "min": 0, "max": 1},
        {"name": "dwell", "type": "float", "min": 0},
    ],
    "tasks": [
        {"name": "click", "label": "clicked", "kind": "binary"},
        {"name": "engagement", "label": "dwell", "kind": "regression", "mask": "clicked",
         "label_transform": "log1p"},
    ],
    "ranking": {"group_by": "request_id", "weights": {"click": 1.0}},
    "split": {"method": "hash", "key": "request_id", "eval_fraction": 0.25, "seed": 3},
}


@pytest.fixture(scope="session")
def tiny_spec():
    """A small spec with every column type and every transform."""
    return spec_from_dict(TINY_SPEC)


@pytest.fixture(scope="session")
def clicklog_spec():
    return load_spec(bundled_spec_path("clicklog"))


@pytest.fixture
def test_pipeline():
    """Makes in-process test pipelines (FnApiRunner: no Prism download, no subprocesses)."""
    return lambda: TestPipeline(runner=FnApiRunner())
