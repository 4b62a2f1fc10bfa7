"""`mmoe compare`: the summary of per-seed runs, its tables and report, and one real comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from feature_specs.artifacts import Workdir
from mmoe.compare import compare_json_path, run_workdir, seeds_for, summarize
from mmoe.compare_tables import comparison_markdown
from mmoe.gate_diagnostics import gate_diagnostics
from conftest import small_clicklog_spec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(click_auc: float, rmse: float, gates: np.ndarray | None = None) -> dict:
    metrics = {
        "click": {"auc": click_auc, "log_loss": 0.35, "calibration": 1.0, "examples": 100},
        "engagement": {"rmse_seconds": rmse, "mae_seconds": rmse / 2, "examples": 10},
        "training": {"best_epoch": 2},
    }
    if gates is not None:
        metrics["gate_diagnostics"] = gate_diagnostics(gates, ["click", "engagement"])
    return metrics


def _runs() -> dict:
    uniform = np.full((20, 2, 4), 0.25)
    return {
        "mmoe": [_run(0.720 + d, 49.0 - d, uniform) for d in (0.000, 0.001, 0.002)],
        "shared_bottom": [_run(0.700 + d, 50.0 + d) for d in (0.000, 0.001, 0.0015)],
        "single_task": [_run(0.710 + d, 50.0) for d in (0.000, 0.001, 0.002)],
    }


def test_summary_has_the_issue_shape_and_paired_verdicts():
    spec = small_clicklog_spec()
    summary = summarize(spec, _runs(), [42, 43, 44])
    assert summary["models"]["mmoe"]["click"]["auc"] == pytest.approx([0.720, 0.721, 0.722])
    assert set(summary["models"]["mmoe"]["click"]) == {"auc", "log_loss"}  # counts and ratios are not compared
    assert summary["headline"] == {"click": "auc", "engagement": "rmse_seconds"}
    assert list(summary["paired"]) == ["mmoe - single_task", "shared_bottom - single_task", "mmoe - shared_bottom"]
    mmoe = summary["paired"]["mmoe - single_task"]
    assert mmoe["tasks"]["click"]["auc"]["mean"] == pytest.approx(0.010)
    assert mmoe["outcomes"] == {"click": "better", "engagement": "better"} and mmoe["verdict"] == "gain"
    shared = summary["paired"]["shared_bottom - single_task"]
    assert shared["outcomes"]["click"] == "worse" and shared["verdict"] == "worse"
    assert summary["gates"]["mmoe"]["specialisation"] == "uniform"
    assert "shared_bottom" not in summary["gates"]
    assert summary["best_epoch"]["mmoe"] == [2, 2, 2]
    json.dumps(summary, allow_nan=True)  # compare.json is written from it


def test_tables_and_the_report_section_show_every_pair():
    from mmoe.report import comparison_section

    summary = summarize(small_clicklog_spec(), _runs(), [42, 43, 44])
    text = comparison_markdown(summary)
    assert "| mmoe | 0.7210 ± 0.0010 |" in text
    assert "| mmoe - single_task | +0.0100 [+0.0100, +0.0100] better |" in text and "**gain**" in text
    assert "| mmoe | 1.000 | 0.0/4 | 1.000 | 0.0/4 | 0.0000 | uniform |" in text
    page = comparison_section(summary)
    assert page.count("<table>") == 3 and "<strong>worse</strong>" in page and "Do the gates choose?" in page


def test_runs_write_under_the_model_dir_and_seeds_count_up_from_the_spec():
    workdir = Workdir("/w")
    assert run_workdir(workdir, "ple", 43).model_dir == "/w/model/compare/ple/seed-43"
    assert run_workdir(workdir, "ple", 43).spec_json == workdir.spec_json
    assert seeds_for(small_clicklog_spec(), 3) == [42, 43, 44]


def _mmoe(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "mmoe_cli.main", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_compare_help_and_usage_errors_need_no_tensorflow(tmp_path):
    code = ("import sys; from mmoe_cli.main import main\ntry: main(['compare', '--help'])\n"
            "except SystemExit: pass\nassert 'tensorflow' not in sys.modules, 'compare --help imported TensorFlow'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert "--models" in result.stdout and "mmoe,shared_bottom,single_task,ple" in result.stdout
    bad = _mmoe("compare", str(tmp_path), "--models", "mmoe,moe")
    assert bad.returncode == 2 and "argument --models: unknown architecture 'moe'" in bad.stderr
    assert _mmoe("compare", str(tmp_path), "--seeds", "1").returncode == 2
    missing = _mmoe("compare", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith("mmoe: will not train on")


@pytest.mark.slow
def test_compare_end_to_end_on_a_preprocessed_workdir(tmp_path):
    """Generate -> Beam -> `mmoe compare` (2 models x 2 seeds, 1 epoch): compare.json and the pages."""
    import dataclasses

    from data_sets.clicklog import generate_clicklog
    from pipelines.run import preprocess

    workdir = Workdir(str(tmp_path / "run"))
    spec = small_clicklog_spec()
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, epochs=1, jit_compile=False))
    generate_clicklog(workdir.raw_dir, rows=1500, seed=3)
    preprocess(spec, os.path.join(workdir.raw_dir, "impressions-*.parquet"), workdir.root)
    result = _mmoe("compare", workdir.root, "--models", "mmoe", "--seeds", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[compare] 4/4 single_task seed 43" in result.stdout and "| mmoe - single_task |" in result.stdout
    with open(compare_json_path(workdir)) as handle:
        summary = json.load(handle)
    assert set(summary["models"]) == {"mmoe", "single_task"}
    for model in summary["models"].values():
        assert len(model["click"]["auc"]) == 2 and len(model["engagement"]["rmse_seconds"]) == 2
        assert all(0.0 <= value <= 1.0 for value in model["click"]["auc"])
    assert summary["models"]["mmoe"]["click"]["auc"][0] != summary["models"]["mmoe"]["click"]["auc"][1]
    pair = summary["paired"]["mmoe - single_task"]
    assert pair["verdict"] in ("gain", "no loss, no gain", "seesaw", "worse", "inconclusive")
    gates = summary["gates"]["mmoe"]
    assert 0.0 < gates["tasks"]["click"]["entropy_vs_uniform"] <= 1.0 and gates["seeds"] == 2
    assert os.path.exists(os.path.join(workdir.model_dir, "compare.html"))
    assert os.path.exists(os.path.join(workdir.model_dir, "compare", "mmoe", "seed-43", "metrics.json"))
    again = _mmoe("compare", workdir.root, "--models", "mmoe", "--seeds", "2")  # finished runs are not redone
    assert again.returncode == 0 and again.stdout.count("(reused;") == 4, again.stdout[-2000:]
    with open(compare_json_path(workdir)) as handle:
        assert json.load(handle)["models"] == summary["models"]


def test_settings_change_the_spec_for_every_model_and_bad_ones_name_their_key():
    from feature_specs.spec import SpecError
    from mmoe.compare import with_settings

    spec = with_settings(small_clicklog_spec(), [
        "model.gate_temperature=0.5", "tasks.engagement.weight=1.0", "training.loss_weighting=uncertainty",
        "model.expert_units=[32, 16]"])
    assert spec.model.gate_temperature == 0.5 and spec.model.expert_units == (32, 16)
    assert [task.weight for task in spec.tasks] == [1.0, 1.0] and spec.training.loss_weighting == "uncertainty"
    for setting, message in [("model.gate_temperature=-1", "model.gate_temperature: must be > 0"),
                             ("model.gate_temprature=2", "model.gate_temprature: unknown key"),
                             ("tasks.dwell.weight=2", "tasks.dwell: no such section"),
                             ("gate_temperature=2", "expected SECTION.KEY=VALUE")]:
        with pytest.raises(SpecError, match=message):
            with_settings(small_clicklog_spec(), [setting])


def test_the_run_report_carries_the_comparison_section(tmp_path):
    from mmoe.plots import plot_paired_differences
    from mmoe.report import write_report

    spec = small_clicklog_spec()
    workdir = Workdir(str(tmp_path))
    os.makedirs(workdir.plots_dir)
    summary = summarize(spec, _runs(), [42, 43, 44])
    plot = plot_paired_differences(summary, os.path.join(workdir.plots_dir, "compare.png"))
    history = {"loss": [0.5, 0.4], "val_loss": [0.55, 0.45]}
    metrics = {"click": {"auc": 0.72}, "engagement": {"rmse_seconds": 49.0}}
    with open(write_report(spec, workdir, history, metrics, summary, plot)) as handle:
        page = handle.read()
    assert "Comparison over seeds (42, 43, 44)" in page and "mmoe - shared_bottom" in page
    assert page.count("data:image/png;base64,") == 1  # only the comparison plot was written here
