"""Shared fixtures: one tiny run of the real stages (generate -> Beam -> train -> export)."""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from feature_specs.artifacts import Workdir
from feature_specs.spec import FeatureSpec
from feature_specs.spec_reader import bundled_spec_path, load_spec


def small_clicklog_spec() -> FeatureSpec:
    """The bundled clicklog spec with a model and training loop sized for tests."""
    spec = load_spec(bundled_spec_path("clicklog"))
    return dataclasses.replace(
        spec,
        model=dataclasses.replace(spec.model, num_experts=4, expert_units=(16,), tower_units=(8,)),
        training=dataclasses.replace(spec.training, epochs=2, batch_size=256, shuffle_buffer=1000),
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A whole run on 4,000 generated rows (1% corrupted): every stage real, built once per session."""
    from data_sets.clicklog import generate_clicklog
    from mmoe.train import train
    from pipelines.run import preprocess
    from serving.export import export_saved_model

    root = tmp_path_factory.mktemp("run")
    workdir = Workdir(str(root))
    spec = small_clicklog_spec()
    generate_clicklog(workdir.raw_dir, rows=4000, seed=1, corrupt_fraction=0.01, chunk_rows=2500)
    report = preprocess(spec, os.path.join(workdir.raw_dir, "impressions-*.parquet"), workdir.root)
    result = train(spec, workdir, verbose=0)
    export_path = export_saved_model(spec, result.models.serving, workdir.export_base)
    return SimpleNamespace(spec=spec, workdir=workdir, report=report, result=result, export_path=export_path)
