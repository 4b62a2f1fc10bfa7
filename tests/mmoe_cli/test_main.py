"""The `mmoe` command line, run as a user runs it: a separate process on a fresh workdir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

MMOE = [sys.executable, "-m", "mmoe_cli.main"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mmoe(*args, check=True):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    env["PYTHONPATH"] = ROOT
    result = subprocess.run([*MMOE, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"mmoe {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def test_help_lists_every_stage():
    out = mmoe("--help").stdout
    for command in ("run", "generate", "preprocess", "train", "evaluate", "export", "serve"):
        assert command in out
    assert "--direct_running_mode" in mmoe("preprocess", "--help").stdout


def test_invalid_spec_is_reported_by_key_path(tmp_path):
    spec = tmp_path / "bad.yaml"
    with open(os.path.join(ROOT, "feature_specs", "clicklog.yaml")) as handle:
        spec.write_text(handle.read().replace("transform: zscore", "transform: zcore"))
    result = mmoe("preprocess", "--spec", str(spec), "--input", "x.csv", "--workdir", str(tmp_path / "w"), check=False)
    assert result.returncode == 2
    assert "features[5].transform: unknown value 'zcore'" in result.stderr


def test_stage_without_its_inputs_says_what_to_run(tmp_path):
    result = mmoe("train", "--workdir", str(tmp_path / "empty"), check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("mmoe: ") and "run `mmoe preprocess" in result.stderr


def test_a_hostile_spec_is_one_console_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"  # the nine-level alias bomb: 9**9 strings once expanded
    bomb.write_text("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")))
    result = mmoe("spec", "check", str(bomb), check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"mmoe spec check: {bomb}: <yaml>: line 7, column 4: YAML aliases expand this value to more than "
        "2,097,152 values, the most a spec may hold"]


# What a newcomer must not see: library start-up chatter, terminal escape codes, progress-bar redraws.
NOISE = ("cuda", "cuInit", "absl::InitializeLog", "oneDNN", "cpu_feature_guard", "apitools", "Traceback",
         "\x1b", "\r", "/Unknown")


@pytest.mark.slow
def test_run_then_stages_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    result = mmoe("run", "--workdir", str(workdir), "--rows", "10000", "--epochs", "2",
                  "--max_reject_rate", "0.5")  # a Beam-style spelling of a flag, accepted as an alias
    out = result.stdout
    assert "SavedModel" in out and "auc=" in out
    assert "epoch 2/2" in out  # plain progress lines: stdout is a pipe here
    for text in NOISE:
        assert text not in out and text not in result.stderr, (text, result.stderr[-2000:])
    with open(workdir / "report.json") as handle:
        report = json.load(handle)
    assert report["input_rows"] == 10000 and report["reconciled"] is True
    assert report["written"]["total"] + report["rejected"]["total"] == 10000
    assert report["rejected"]["total"] > 0  # the generator's default dirt was caught
    with open(workdir / "metrics.json") as handle:
        metrics = json.load(handle)
    assert metrics["click"]["auc"] > 0.6, metrics["click"]
    assert metrics["engagement"]["rmse_seconds"] > 0
    version = workdir / "export" / "clicklog" / "1"
    assert sorted(os.listdir(workdir / "data")) and (version / "saved_model.pb").exists()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0

    # The stages one by one reuse what is there: evaluate; another architecture on the same data,
    # and a second export version that follows the model it trained (model/spec.json).
    assert "auc=" in mmoe("evaluate", "--workdir", str(workdir)).stdout
    assert "auc=" in mmoe("train", "--workdir", str(workdir), "--model", "shared_bottom", "--epochs", "1", "--quiet").stdout
    assert "clicklog/2" in mmoe("export", "--workdir", str(workdir)).stdout
    with open(workdir / "export" / "clicklog" / "2" / "assets.extra" / "spec.json") as handle:
        assert json.load(handle)["model"]["architecture"] == "shared_bottom"
