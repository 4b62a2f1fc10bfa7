"""Training on a workdir in a bad state: a preprocess that did not complete, damaged checkpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil

import pytest

from feature_specs.artifacts import PREPROCESS_COMPLETE, PREPROCESS_FAILED, Workdir
from mmoe.checkpoints import CheckpointMismatchError
from mmoe.data import UnfinishedPreprocessError, require_preprocessed
from mmoe.loop import Trainer
from mmoe.train import train

CHECKPOINT_EVERY = 5  # steps; the session run's train rows in batches of 256 are 13 steps an epoch


def _spec(trained_run, **training):
    spec = trained_run.spec
    settings = {"batch_size": 256, "jit_compile": False, "checkpoint_every_steps": CHECKPOINT_EVERY, **training}
    return dataclasses.replace(spec, training=dataclasses.replace(spec.training, **settings))


def _trainer(trained_run, model_root, **training) -> Trainer:
    """A Trainer on the session run's data whose checkpoints live under ``model_root``."""
    workdir = dataclasses.replace(trained_run.workdir, model_root=str(model_root))
    return Trainer(_spec(trained_run, **training), workdir)


@pytest.fixture(scope="module")
def one_epoch(trained_run, tmp_path_factory):
    """``(model root, steps per epoch)``: checkpoints as a run killed in its second epoch leaves
    them, ``ckpt-5``, ``ckpt-10`` (first epoch) and ``ckpt-<steps per epoch>`` (its end, with the
    epoch's history beside them). Saved without training: only the loop's position matters here."""
    root = tmp_path_factory.mktemp("one_epoch") / "model"
    state = _trainer(trained_run, root).checkpoints
    steps_per_epoch = math.ceil(trained_run.report["written"]["train"] / 256)
    for step in (CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY):
        state.step.assign(step)
        state.step_in_epoch.assign(step)
        state.save()
    state.step.assign(steps_per_epoch)
    state.epoch.assign(1)
    state.step_in_epoch.assign(0)
    state.save_history({"loss": [0.5], "val_loss": [0.4]})
    state.save()
    assert [path.rsplit("-", 1)[1] for path in state.manager.checkpoints] == ["5", "10", str(steps_per_epoch)]
    return root, steps_per_epoch


@pytest.fixture
def model_root(one_epoch, tmp_path):
    """A copy of :func:`one_epoch`'s model root, to damage."""
    root = tmp_path / "model"
    shutil.copytree(one_epoch[0], root)
    return root


def _checkpoint_file(model_root, step: int, suffix: str = ".data-00000-of-00001") -> str:
    return os.path.join(model_root, "checkpoints", f"ckpt-{step}{suffix}")


def _truncate(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _overwrite_middle(path: str) -> None:
    """Flips every bit of 64 bytes in the middle of ``path``: the same size, another checksum."""
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        flipped = bytes(255 - byte for byte in handle.read(64))
        handle.seek(os.path.getsize(path) // 2)
        handle.write(flipped)


# ---------------------------------------------------------------------------------------------
# A preprocess that did not complete


def _workdir_with_report(root, content: bytes | None) -> Workdir:
    workdir = Workdir(str(root))
    os.makedirs(root, exist_ok=True)
    if content is not None:
        with open(workdir.report_json, "wb") as handle:
            handle.write(content)
    return workdir


@pytest.mark.parametrize("content, reason", [
    (json.dumps({"status": PREPROCESS_FAILED, "failure": "reject rate 0.4 is above max_reject_rate 0.05."}).encode(),
     r"the last `mmoe preprocess` failed: reject rate 0.4 is above max_reject_rate 0.05\. Rerun"),
    (None, r"report.json is missing"),
    (b"\xff\xfe{not json", r"report.json is not valid JSON"),
], ids=["failed", "missing", "not-json"])
def test_training_refuses_a_workdir_whose_preprocess_did_not_complete(trained_run, tmp_path, content, reason):
    workdir = _workdir_with_report(tmp_path / "run", content)
    with pytest.raises(UnfinishedPreprocessError, match=reason) as raised:
        train(trained_run.spec, workdir, verbose=0)
    message = str(raised.value)
    assert "\n" not in message and f"Rerun `mmoe preprocess --input <log> --workdir {workdir.root}`" in message
    assert raised.value.exit_code == 2
    with pytest.raises(UnfinishedPreprocessError, match=reason):  # baselines and scripts train through Trainer
        Trainer(trained_run.spec, workdir)
    assert not os.path.exists(workdir.model_dir), "nothing is written"


def test_a_completed_preprocess_is_trained_on(trained_run, tmp_path):
    require_preprocessed(trained_run.workdir)  # the session's real preprocess
    require_preprocessed(_workdir_with_report(tmp_path, json.dumps({"status": PREPROCESS_COMPLETE}).encode()))


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints


@pytest.mark.parametrize("damage", [_truncate, _overwrite_middle, os.remove], ids=["truncated", "overwritten", "deleted"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before_it(trained_run, one_epoch, model_root, damage,
                                                                     caplog):
    newest = one_epoch[1]
    damage(_checkpoint_file(model_root, newest))
    trainer = _trainer(trained_run, model_root)
    with caplog.at_level(logging.WARNING, logger="mmoe.checkpoints"):
        assert trainer.restore()
    bad = _checkpoint_file(model_root, newest, "")
    assert f"checkpoint {bad} cannot be resumed from" in caplog.text and "trying the one before it" in caplog.text
    assert (int(trainer.step), int(trainer.epoch), int(trainer.step_in_epoch)) == (10, 0, 10)
    assert trainer.checkpoints.load_history() == {}, "the saved epoch is not one the restored checkpoint did"


@pytest.mark.slow
def test_a_run_resumed_before_a_damaged_checkpoint_redoes_its_steps_and_keeps_one_history_entry_per_epoch(
        trained_run, one_epoch, model_root):
    _truncate(_checkpoint_file(model_root, one_epoch[1]))
    trainer = _trainer(trained_run, model_root)
    history = trainer.fit(epochs=1, verbose=0)
    assert int(trainer.step) == one_epoch[1] and int(trainer.epoch) == 1
    assert {len(values) for values in history.values()} == {1}


def test_when_no_checkpoint_is_intact_the_run_starts_from_scratch(trained_run, one_epoch, model_root, caplog):
    for step in (5, 10, one_epoch[1]):
        _truncate(_checkpoint_file(model_root, step, ".index"))
    trainer = _trainer(trained_run, model_root)
    with caplog.at_level(logging.WARNING, logger="mmoe.checkpoints"):
        assert not trainer.restore()
    assert caplog.text.count("cannot be resumed from") == 3 and "ckpt-5 cannot be resumed from" in caplog.text
    assert caplog.text.rstrip().endswith("starting from scratch")
    assert (int(trainer.step), int(trainer.epoch), int(trainer.best_epoch)) == (0, 0, -1)


def test_a_checkpoint_whose_epochs_the_history_lacks_is_not_resumed(trained_run, one_epoch, model_root, caplog):
    os.remove(os.path.join(model_root, "checkpoints", "history.json"))
    trainer = _trainer(trained_run, model_root)
    with caplog.at_level(logging.WARNING, logger="mmoe.checkpoints"):
        assert trainer.restore()
    assert "it has done 1 epochs, and" in caplog.text and int(trainer.step) == 10


@pytest.mark.parametrize("garbage", [bytes(range(256)), b"model_checkpoint_path: {{{", b""],
                         ids=["binary", "not-a-state", "empty"])
def test_a_garbage_checkpoint_index_is_removed_and_the_checkpoints_found_by_name(trained_run, one_epoch, model_root,
                                                                                garbage, caplog):
    index = os.path.join(model_root, "checkpoints", "checkpoint")
    with open(index, "wb") as handle:
        handle.write(garbage)
    trainer = _trainer(trained_run, model_root)
    with caplog.at_level(logging.WARNING, logger="mmoe.checkpoints"):
        assert trainer.restore()
    assert f"the checkpoint index {index} is unreadable" in caplog.text and not os.path.exists(index)
    assert int(trainer.step) == one_epoch[1] and int(trainer.epoch) == 1
    trainer.checkpoints.save()  # the manager writes a new index
    assert trainer.checkpoints.manager.latest_checkpoint.endswith(f"ckpt-{one_epoch[1]}")


def test_a_fresh_start_does_not_read_a_garbage_index(trained_run, model_root):
    with open(os.path.join(model_root, "checkpoints", "checkpoint"), "wb") as handle:
        handle.write(b"\xa6\xff" * 100)
    trainer = _trainer(trained_run, model_root)  # `mmoe train --fresh`: Trainer, then clear_checkpoints
    trainer.clear_checkpoints()
    assert not os.path.exists(os.path.join(model_root, "checkpoints"))
    assert not trainer.restore() and trainer.checkpoints.manager.latest_checkpoint is None


def test_an_intact_checkpoint_of_another_model_is_a_user_error(trained_run, model_root):
    spec = _spec(trained_run)
    workdir = dataclasses.replace(trained_run.workdir, model_root=str(model_root))
    trainer = Trainer(dataclasses.replace(spec, model=dataclasses.replace(spec.model, num_experts=3)), workdir)
    with pytest.raises(CheckpointMismatchError, match=r"does not match the model being trained .*--fresh"):
        trainer.restore()
