"""Training as separate processes: killed with SIGKILL and resumed; two MultiWorkerMirroredStrategy
workers on loopback. Each process is a real `mmoe train` on a copy of the session run's data."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from feature_specs.artifacts import Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


def _copy_data(trained_run, root) -> Workdir:
    """A workdir holding the session run's data, artifacts and report (training reads it to see
    that the preprocess completed), and no model."""
    source = trained_run.workdir
    workdir = Workdir(str(root))
    shutil.copytree(source.data_dir, workdir.data_dir)
    shutil.copytree(source.artifacts_dir, workdir.artifacts_dir)
    shutil.copy(source.report_json, workdir.report_json)
    return workdir


def _spec_file(trained_run, path, **training) -> str:
    spec = trained_run.spec
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, **training))
    with open(path, "w") as handle:
        handle.write(spec.to_json())
    return str(path)


def _train_command(workdir: Workdir, spec_path: str, *extra) -> list[str]:
    return [sys.executable, "-m", "mmoe_cli.main", "train", "--workdir", workdir.root, "--spec", spec_path,
            "--quiet", *extra]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _weights(path: str) -> dict[str, np.ndarray]:
    values = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, node: values.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None)
    return values


def _latest_checkpoint_step(checkpoint_dir: str) -> int | None:
    index = os.path.join(checkpoint_dir, "checkpoint")
    if not os.path.exists(index):
        return None
    with open(index) as handle:
        first = handle.readline()  # model_checkpoint_path: "ckpt-40"
    return int(first.strip().rstrip('"').rsplit("-", 1)[1])


def test_a_killed_run_resumes_from_its_last_checkpoint(trained_run, tmp_path):
    # 3,200 train rows / batch 16 = 200 steps per epoch, 2 epochs; a checkpoint every 25 steps.
    spec_path = _spec_file(trained_run, tmp_path / "spec.json", batch_size=16, epochs=2, checkpoint_every_steps=25)
    interrupted = _copy_data(trained_run, tmp_path / "interrupted")
    checkpoints = interrupted.checkpoints_dir

    process = subprocess.Popen(_train_command(interrupted, spec_path), env=_env(), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while (_latest_checkpoint_step(checkpoints) or 0) < 50 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be killed"
    time.sleep(0.2)  # let a checkpoint being written when the kill came be seen as incomplete
    killed_at = _latest_checkpoint_step(checkpoints)
    assert killed_at is not None and killed_at >= 50
    assert not os.path.exists(interrupted.metrics_json)

    resumed = subprocess.run(_train_command(interrupted, spec_path), env=_env(), cwd=ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epoch, step_in_epoch = divmod(killed_at, 200)
    assert f"resuming from {checkpoints}/ckpt-{killed_at}: step {killed_at} (epoch {epoch + 1}, step {step_in_epoch}" \
        in resumed.stderr
    with open(interrupted.history_json) as handle:
        assert len(json.load(handle)["loss"]) == 2, "the history covers the epochs before the kill too"
    assert not os.path.exists(checkpoints), "a finished run removes its checkpoints"

    # The same run, never interrupted, ends with the same weights.
    straight = _copy_data(trained_run, tmp_path / "straight")
    subprocess.run(_train_command(straight, spec_path), env=_env(), cwd=ROOT, check=True, capture_output=True)
    after_resume = _weights(interrupted.serving_weights)
    uninterrupted = _weights(straight.serving_weights)
    assert after_resume.keys() == uninterrupted.keys()
    for name in uninterrupted:
        np.testing.assert_allclose(after_resume[name], uninterrupted[name], rtol=1e-4, atol=1e-5, err_msg=name)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _train_cluster(workdir: Workdir, spec_path: str) -> list[tuple[str, str]]:
    """Runs ``mmoe train --distributed`` as two MultiWorkerMirroredStrategy workers on 127.0.0.1;
    returns their ``(stdout, stderr)``."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            _train_command(workdir, spec_path, "--distributed"), env=_env(TF_CONFIG=tf_config), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    return outputs


def test_two_multi_worker_mirrored_workers_train_to_identical_weights(trained_run, tmp_path):
    # 3,126 train rows in global batches of 256: each epoch ends with a partial batch, which the
    # workers pad to full ones inside the compiled loop of 8 steps per call. The user and item
    # tables (about 240 and 370 rows) are updated lazily, the smaller ones densely.
    workdir = _copy_data(trained_run, tmp_path / "cluster")
    spec_path = _spec_file(trained_run, tmp_path / "spec.json", epochs=2, batch_size=256, steps_per_execution=8,
                           lazy_update_min_rows=200)
    outputs = _train_cluster(workdir, spec_path)
    assert "Eval metrics" in outputs[0][0], "worker 0 is the chief: it evaluates and writes the model"
    assert "worker finished" in outputs[1][0]

    chief = _weights(workdir.serving_weights)
    other = _weights(workdir.worker(1).serving_weights)
    assert chief.keys() == other.keys() and len(chief) > 10
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    with open(workdir.metrics_json) as handle:
        assert json.load(handle)["training"]["epochs"] == 2

    # The same cluster run at one step per call ends with the same weights.
    single = _copy_data(trained_run, tmp_path / "single")
    _train_cluster(single, _spec_file(trained_run, tmp_path / "single.json", epochs=2, batch_size=256,
                                      steps_per_execution=1, lazy_update_min_rows=200))
    one_per_call = _weights(single.serving_weights)
    for name in chief:
        np.testing.assert_allclose(chief[name], one_per_call[name], rtol=1e-4, atol=1e-5, err_msg=name)
