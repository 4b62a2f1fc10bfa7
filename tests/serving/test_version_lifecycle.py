"""A version's life on disk: which names are versions, versions copied in piece by piece, staging leftovers.

The registry and server are the real ones, over a copy of the session run's export; polling is
either driven by hand (``poll_seconds=0`` and ``refresh()``) or short.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import pytest

from feature_specs.errors import UserError
from serving import models
from serving.contract import MAX_VERSION, VersionError, check_version, existing_versions, parse_version, scan_versions
from serving.models import ModelRegistry
from serving.server import make_server
from serving.staging import STALE_AFTER_SECONDS, STAGING_PREFIX, remove_stale_staging, staging_dir


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def copy_in_pieces(source: str, target: str) -> None:
    """The issue's ``mkdir -p T/variables; cp -r S/{everything but variables} T/``: a version without weights.

    Files are copied without their timestamps, as ``cp`` does.
    """
    os.makedirs(os.path.join(target, "variables"))
    for name in os.listdir(source):
        if name == "variables":
            continue
        if os.path.isdir(os.path.join(source, name)):
            shutil.copytree(os.path.join(source, name), os.path.join(target, name), copy_function=shutil.copy)
        else:
            shutil.copy(os.path.join(source, name), os.path.join(target, name))


def copy_variables(source: str, target: str) -> None:
    """The issue's last step, ``cp S/variables/* T/variables/``."""
    for name in os.listdir(os.path.join(source, "variables")):
        shutil.copy(os.path.join(source, "variables", name), os.path.join(target, "variables", name))


@pytest.fixture
def model_base(trained_run, tmp_path) -> str:
    """``<tmp>/clicklog`` holding a copy of the run's export as version 1."""
    base = tmp_path / "clicklog"
    shutil.copytree(trained_run.export_path, base / "1")
    return str(base)


def get_json(url: str, path: str) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# -- which names are versions ----------------------------------------------------------------------


@pytest.mark.parametrize("name, version", [
    ("0", 0), ("1", 1), ("42/", 42), (str(MAX_VERSION), MAX_VERSION),
    ("²", None), ("٣", None), ("1²", None), ("007", None), ("-1", None), ("+1", None), (" 1", None),
    (str(MAX_VERSION + 1), None), ("99999999999999999999", None), (".tmp-3-ab", None), ("", None),
])
def test_only_plain_ascii_integers_within_int64_are_version_names(name, version):
    assert parse_version(name) == version


def test_scan_keeps_version_directories_ignores_odd_names_and_hides_staging(tmp_path):
    for name in ("1", "12", "²", "007", "99999999999999999999", ".tmp-5-abcd1234-1-host", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version directory")
    assert scan_versions(str(tmp_path)) == ([1, 12], ["007", "5", "99999999999999999999", "notes", "²"])
    assert existing_versions(str(tmp_path)) == [1, 12]
    assert scan_versions(str(tmp_path / "missing")) == ([], [])


@pytest.mark.parametrize("version", [-1, MAX_VERSION + 1, 99999999999999999999, True, 1.0, "3", None])
def test_versions_tf_serving_cannot_hold_are_user_errors(version):
    with pytest.raises(VersionError, match=r"int64 integers >= 0 \(0 to 9223372036854775807\)") as error:
        check_version(version)
    assert isinstance(error.value, UserError) and error.value.exit_code == 2
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("version", [0, 1, MAX_VERSION])
def test_versions_in_range_pass(version):
    assert check_version(version) == version


# -- versions copied in piece by piece -------------------------------------------------------------


def test_a_version_copied_in_pieces_is_retried_once_it_changes_and_loaded_once_complete(
        trained_run, model_base, monkeypatch, caplog):
    attempts = []
    real_load = models.load_version

    def counting_load(path, version, *args, **kwargs):
        attempts.append(version)
        return real_load(path, version, *args, **kwargs)

    monkeypatch.setattr(models, "load_version", counting_load)
    os.mkdir(os.path.join(model_base, "²"))
    registry = ModelRegistry(model_base, "clicklog", batch_max_size=1, poll_seconds=0)
    caplog.set_level(logging.WARNING, logger="serving.models")
    try:
        registry.start()
        assert registry.versions() == [1]
        source, target = os.path.join(model_base, "1"), os.path.join(model_base, "4")
        copy_in_pieces(source, target)
        registry.refresh()
        status = registry.status(4)
        assert status.state == "END" and "variables" in status.error
        assert attempts == [1, 4]
        for _ in range(3):  # unchanged: not retried, and the odd name is not logged again
            registry.refresh()
        assert attempts == [1, 4]
        assert sum("²" in r.getMessage() for r in caplog.records) == 1
        assert registry.versions() == [1] and registry.get().version == 1  # the failed newest: 1 serves on

        copy_variables(source, target)
        registry.refresh()
        assert attempts == [1, 4, 4]
        assert registry.versions() == [4] and registry.status(4).state == "AVAILABLE"  # latest:1 replaces 1
        assert registry.status(4).error == ""
        assert registry.status(1).state == "END" and registry.status(1).error == ""
        registry.refresh()
        assert attempts == [1, 4, 4], "a loaded version is not loaded again"
    finally:
        registry.close()


def test_the_server_serves_a_half_copied_version_once_complete_and_odd_names_never_break_it(model_base):
    for name in ("²", "99999999999999999999", "007"):
        os.mkdir(os.path.join(model_base, name))
    os.mkdir(os.path.join(model_base, f"{STAGING_PREFIX}9-0123abcd-1-elsewhere"))
    with make_server(model_base, poll_seconds=0.1, batch_max_size=1) as running:  # the model dir itself
        assert running.registry.versions() == [1]
        source, target = os.path.join(model_base, "1"), os.path.join(model_base, "4")
        copy_in_pieces(source, target)
        wait_for(lambda: running.registry.status(4) is not None and running.registry.status(4).state == "END")
        status, body = get_json(running.url, "/v1/models/clicklog")
        assert status == 200
        assert [(s["version"], s["state"]) for s in body["model_version_status"]] == [("4", "END"), ("1", "AVAILABLE")]
        os.mkdir(os.path.join(model_base, "½"))  # appears while serving: polling goes on
        copy_variables(source, target)
        wait_for(lambda: running.registry.versions() == [4])  # latest:1: once complete, 4 replaces 1
        status, body = get_json(running.url, "/v1/models/clicklog/versions/4")
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        status, body = get_json(running.url, "/v1/models/clicklog/versions/1")
        assert status == 200 and body["model_version_status"][0]["state"] == "END"


# -- staging directories left by killed exports ----------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def make_staging(model_base, name: str, age_seconds: float = 0.0) -> str:
    path = os.path.join(model_base, name)
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "variables", "variables.index"), "wb") as handle:
        handle.write(b"partial")
    if age_seconds:
        then = time.time() - age_seconds
        for entry in (os.path.join(path, "variables", "variables.index"), os.path.join(path, "variables"), path):
            os.utime(entry, (then, then))
    return path


def test_only_stale_staging_directories_of_the_model_are_removed(tmp_path):
    model_base = tmp_path / "clicklog"
    model_base.mkdir()
    ours = staging_dir(str(model_base), 3)
    host = os.path.basename(ours).split("-", 4)[4]
    assert os.path.basename(ours).startswith(f"{STAGING_PREFIX}3-") and f"-{os.getpid()}-" in ours
    running = make_staging(model_base, os.path.basename(ours), age_seconds=2 * STALE_AFTER_SECONDS)
    killed = make_staging(model_base, f"{STAGING_PREFIX}4-0123abcd-{dead_pid()}-{host}")
    elsewhere_fresh = make_staging(model_base, f"{STAGING_PREFIX}5-0123abcd-1-otherhost")
    elsewhere_old = make_staging(model_base, f"{STAGING_PREFIX}6-0123abcd-1-otherhost", 2 * STALE_AFTER_SECONDS)
    old_layout = make_staging(model_base, f"{STAGING_PREFIX}7-deadbeef", 2 * STALE_AFTER_SECONDS)
    recent_old_layout = make_staging(model_base, f"{STAGING_PREFIX}8-cafef00d", STALE_AFTER_SECONDS / 2)
    not_staging = make_staging(model_base, ".hidden-1", 2 * STALE_AFTER_SECONDS)
    outside = make_staging(tmp_path, "precious", 2 * STALE_AFTER_SECONDS)
    link = model_base / f"{STAGING_PREFIX}9-0123abcd-{dead_pid()}-{host}"
    link.symlink_to(outside)
    other_model = make_staging(tmp_path / "other", f"{STAGING_PREFIX}1-deadbeef", 2 * STALE_AFTER_SECONDS)

    removed = remove_stale_staging(str(model_base))

    assert sorted(removed) == sorted([killed, elsewhere_old, old_layout])
    for kept in (running, elsewhere_fresh, recent_old_layout, not_staging, other_model):
        assert os.path.isfile(os.path.join(kept, "variables", "variables.index")), kept
    assert os.path.islink(link) and os.path.isfile(os.path.join(outside, "variables", "variables.index"))
    assert remove_stale_staging(str(tmp_path / "missing")) == []
