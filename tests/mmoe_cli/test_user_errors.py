"""A user's mistake ends `mmoe` with one line and its exit code; --debug shows the traceback; a bug
keeps its traceback (issue 22, item 7). In-process: `mmoe_cli.main.main([...])` with a stage replaced."""

from __future__ import annotations

import pytest

import mmoe_cli.main as cli
from feature_specs.errors import UserError
from feature_specs.spec import MAX_BATCH_SIZE, MAX_EPOCHS
from feature_specs.spec_file import MAX_SPEC_BYTES
from feature_specs.spec_reader import bundled_spec_path

# The nine-level alias bomb (387 million strings once expanded).
NINE_LEVEL_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi"))


class _RunFailedACheck(UserError):
    exit_code = 1


def _raising(exc: BaseException):
    def stage(args, beam_args):
        raise exc

    return stage


@pytest.fixture
def no_tensorflow(monkeypatch):
    """The stages' TensorFlow start-up skipped: these tests fail before a stage needs it."""
    monkeypatch.setattr(cli, "start_tensorflow_quietly", lambda verbose: None)


def _stderr_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize(
    "exc, code, line",
    [
        (UserError("data/ holds the output of a failed preprocess: rerun it"), 2,
         "mmoe: data/ holds the output of a failed preprocess: rerun it"),
        (_RunFailedACheck("12.0% of rows rejected, above pipeline.max_reject_rate 0.05"), 1,
         "mmoe: 12.0% of rows rejected, above pipeline.max_reject_rate 0.05"),
        (UserError("e.csv: the file is empty\n  (a CSV needs a header line)"), 2,
         "mmoe: e.csv: the file is empty; (a CSV needs a header line)"),
        (FileNotFoundError("no input file matches 'logs/*.csv'"), 2, "mmoe: no input file matches 'logs/*.csv'"),
    ],
)
def test_a_user_error_from_a_stage_is_one_line_and_its_exit_code(monkeypatch, capsys, exc, code, line):
    monkeypatch.setitem(cli.COMMANDS, "generate", _raising(exc))
    assert cli.main(["generate", "--workdir", "w"]) == code
    assert _stderr_line(capsys) == line


@pytest.mark.parametrize("argv", [["--debug", "generate"], ["generate", "--debug"], ["preprocess", "--input", "x.csv", "--debug"]])
def test_debug_shows_the_traceback(monkeypatch, argv):
    error = _RunFailedACheck("too many rejected rows")
    monkeypatch.setitem(cli.COMMANDS, argv[0] if argv[0] != "--debug" else argv[1], _raising(error))
    with pytest.raises(_RunFailedACheck) as info:
        cli.main(argv)
    assert info.value is error


def test_verbose_alone_keeps_the_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "generate", _raising(UserError("bad")))
    assert cli.main(["-v", "generate"]) == 2
    assert capsys.readouterr().err.strip().endswith("mmoe: bad")


@pytest.mark.parametrize("exc", [RuntimeError("a defect"), ValueError("a defect"), KeyError("a defect")])
def test_a_bug_keeps_its_traceback(monkeypatch, exc):
    monkeypatch.setitem(cli.COMMANDS, "generate", _raising(exc))
    with pytest.raises(type(exc)):
        cli.main(["generate"])


def test_a_spec_error_reads_invalid_spec(no_tensorflow, tmp_path, capsys):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes(open(bundled_spec_path("clicklog"), "rb").read().replace(b"Synthetic", b"Synth\xe9tic"))
    assert cli.main(["preprocess", "--spec", str(spec), "--input", "x.csv", "--workdir", str(tmp_path / "w")]) == 2
    line = _stderr_line(capsys)
    assert line.startswith(f"mmoe: invalid spec: {spec}: <file>: not UTF-8 text: byte 0xe9 at byte offset ")
    assert "(line 5)" in line


def test_a_spec_error_with_debug_raises(no_tensorflow, tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(NINE_LEVEL_BOMB)
    with pytest.raises(UserError, match="YAML aliases expand"):
        cli.main(["--debug", "preprocess", "--spec", str(spec), "--input", "x.csv"])


@pytest.mark.parametrize(
    "text, expected",
    [
        (NINE_LEVEL_BOMB, "<yaml>: line 7, column 4: YAML aliases expand this value"),
        ("name: " + "a" * MAX_SPEC_BYTES, f"<file>: larger than {MAX_SPEC_BYTES:,} bytes"),
        (open(bundled_spec_path("clicklog")).read().replace("batch_size: 512", "batch_size: 100000000000000000000000"),
         f"training.batch_size: must be <= {MAX_BATCH_SIZE:,}, got 100000000000000000000000"),
    ],
)
def test_spec_check_refuses_hostile_specs_on_one_line(tmp_path, capsys, text, expected):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert cli.main(["spec", "check", str(spec)]) == 2
    line = _stderr_line(capsys)
    assert line.startswith(f"mmoe spec check: {spec}: ") and expected in line, line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--batch-size", "100000000000000000000000"], f"--batch-size: must be in [1, {MAX_BATCH_SIZE:,}]"),
        (["train", "--epochs", str(MAX_EPOCHS + 1)], f"--epochs: must be in [1, {MAX_EPOCHS:,}]"),
        (["preprocess", "--input", "x.csv", "--max-reject-rate", "nan"], "--max-reject-rate: must be a finite number in [0, 1]"),
        (["generate", "--rows", "0"], "--rows: must be >= 1, got 0"),
        (["serve", "--port", "70000"], "--port: must be in [0, 65,535]"),
        (["serve", "--batch-max-size", "0"], "--batch-max-size: must be >= 1"),
        (["spec", "check", "s.yaml", "--max-rows", "ten"], "--max-rows: expected an integer, got 'ten'"),
    ],
)
def test_out_of_range_flags_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
