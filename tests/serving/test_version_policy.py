"""The version policy (latest:N, all, specific) and version labels, on the real registry.

Versions are copies of the session run's export; polling is driven by hand (``poll_seconds=0`` and
``refresh()``), and batching is off except where a batcher is the point.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import mmoe_cli.main as cli
from feature_specs.errors import UserError
from serving import models
from serving.batching import VersionUnloaded
from serving.models import UNLOAD_GRACE_SECONDS, ModelRegistry, UnknownVersionLabel, VersionNotServed
from serving.versions import (
    DEFAULT_VERSION_POLICY,
    AllVersions,
    LatestVersions,
    SpecificVersions,
    VersionLabelError,
    VersionPolicyError,
    as_version_policy,
    parse_version_labels,
    parse_version_policy,
)


@pytest.fixture
def model_dir(tmp_path):
    return tmp_path / "clicklog"


@pytest.fixture
def add_version(trained_run, model_dir):
    """``add_version(v)`` copies the run's export in as version ``v``; returns its directory."""
    def add(version: int):
        return shutil.copytree(trained_run.export_path, model_dir / str(version))
    return add


@pytest.fixture
def attempts(monkeypatch) -> list[int]:
    """The versions the registry tries to load, in order."""
    tried = []
    real_load = models.load_version

    def counting_load(path, version, *args, **kwargs):
        tried.append(version)
        return real_load(path, version, *args, **kwargs)

    monkeypatch.setattr(models, "load_version", counting_load)
    return tried


def started(model_dir, **settings) -> ModelRegistry:
    registry = ModelRegistry(str(model_dir), "clicklog", **{"batch_max_size": 1, "poll_seconds": 0, **settings})
    registry.start()
    return registry


def break_version(model_dir, version: int) -> None:
    (model_dir / str(version)).mkdir()
    (model_dir / str(version) / "saved_model.pb").write_bytes(b"not a SavedModel")


def one_row(signature) -> dict:
    """A one-row input for ``signature`` (any value will do: the model only has to run)."""
    return {name: np.array([b"x"]) if spec.dtype == tf.string else np.zeros([1], spec.dtype.as_numpy_dtype)
            for name, spec in signature.inputs.items()}


# -- the policy text -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, policy", [
    ("latest:1", LatestVersions(1)), ("latest:12", LatestVersions(12)), (" all ", AllVersions()),
    ("specific:3", SpecificVersions((3,))), ("specific:4, 1,3", SpecificVersions((1, 3, 4))),
    ("specific:0,9223372036854775807", SpecificVersions((0, 2**63 - 1))),
])
def test_policy_texts_parse_and_print_back(text, policy):
    assert parse_version_policy(text) == policy
    assert parse_version_policy(str(policy)) == policy
    assert as_version_policy(text) == policy and as_version_policy(policy) is policy


@pytest.mark.parametrize("text, why", [
    ("latest:0", "N must be an integer >= 1, got '0'"), ("latest:-2", "got '-2'"), ("latest:", "got ''"),
    ("latest:²", "got '²'"), ("latest", "unknown form"), ("all:2", "unknown form"), ("newest:1", "unknown form"),
    ("", "unknown form"), ("specific:", "'' is not a version"), ("specific:1,,2", "'' is not a version"),
    ("specific:007", "'007' is not a version"), ("specific:3/", "'3/' is not a version"),
    ("specific:9223372036854775808", "'9223372036854775808' is not a version"),
    ("specific:2,2", "version 2 is listed twice"),
])
def test_a_bad_policy_names_the_flag_the_problem_and_the_accepted_forms(text, why):
    with pytest.raises(VersionPolicyError) as error:
        parse_version_policy(text)
    message = str(error.value)
    assert message.startswith(f"--versions {text.strip()!r} is not a version policy: ") or text == ""
    assert why in message and "latest:N" in message and "all" in message and "specific:V1,V2" in message
    assert isinstance(error.value, UserError) and error.value.exit_code == 2 and "\n" not in message


@pytest.mark.parametrize("policy", [lambda: LatestVersions(0), lambda: SpecificVersions(()),
                                    lambda: SpecificVersions((-1,))])
def test_policies_built_in_code_are_checked_too(policy):
    with pytest.raises(UserError):
        policy()


def test_each_policy_selects_newest_first():
    on_disk = [1, 2, 3, 5]
    assert DEFAULT_VERSION_POLICY == LatestVersions(1) and str(DEFAULT_VERSION_POLICY) == "latest:1"
    assert LatestVersions(1).select(on_disk) == [5]
    assert LatestVersions(3).select(on_disk) == [5, 3, 2] and LatestVersions(9).select(on_disk) == [5, 3, 2, 1]
    assert AllVersions().select(on_disk) == [5, 3, 2, 1]
    assert SpecificVersions((1, 3, 4)).select(on_disk) == [3, 1]


@pytest.mark.parametrize("text, labels", [
    (None, {}), ("", {}), ("stable=3", {"stable": 3}), ("stable=3, canary = 4", {"stable": 3, "canary": 4}),
    ("a=1,b.2-c_d=1", {"a": 1, "b.2-c_d": 1}),
])
def test_label_texts_parse(text, labels):
    assert parse_version_labels(text) == labels


@pytest.mark.parametrize("text, why", [
    ("stable", "'stable' is not label=version"), ("stable=", "label 'stable': '' is not a version"),
    ("stable=x", "'x' is not a version"), ("stable=03", "'03' is not a version"),
    ("=3", "label '' is not a name"), ("3=3", "label '3' is not a name"), ("a/b=3", "label 'a/b' is not a name"),
    ("stable=3,stable=4", "label 'stable' is given twice"),
])
def test_bad_labels_name_the_flag_and_the_pair(text, why):
    with pytest.raises(VersionLabelError) as error:
        parse_version_labels(text)
    assert str(error.value).startswith("--version-labels: ") and why in str(error.value)
    assert "stable=3,canary=4" in str(error.value) and isinstance(error.value, UserError)


# -- which versions load ---------------------------------------------------------------------------


def test_by_default_only_the_newest_version_is_loaded(model_dir, add_version, attempts):
    for version in (1, 2, 3):
        add_version(version)
    registry = started(model_dir)
    try:
        assert attempts == [3], "versions outside the policy are never loaded"
        assert registry.versions() == [3] and registry.get().version == 3
        assert [(s.version, s.state) for s in registry.statuses()] == [(3, "AVAILABLE")]
        assert registry.get(1) is None and registry.status(1) is None
    finally:
        registry.close()


def test_a_new_version_replaces_the_old_one_without_a_gap(model_dir, add_version, caplog):
    """Version 2 is loaded and warmed up while 1 serves; only then is 1 unloaded, and requests that
    picked 1 just before finish on it (its batcher stays open for the grace period)."""
    add_version(1)
    registry = started(model_dir, batch_max_size=64, version_labels="stable=1")
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            served = registry.get()
            seen.append(None if served is None else served.version)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    try:
        old = registry.resolve(label="stable")
        assert old.version == 1
        add_version(2)
        watcher.start()
        caplog.set_level(logging.INFO, logger="serving.models")
        registry.refresh()
        swapped = len(seen)
        while len(seen) < swapped + 3 and watcher.is_alive():  # let the watcher see the new version too
            time.sleep(0.005)
        done.set()
        watcher.join()
        assert None not in seen and seen[0] == 1 and seen[-1] == 2
        assert registry.versions() == [2]
        assert registry.status(1).to_json() == {"version": "1", "state": "END",
                                                "status": {"error_code": "OK", "error_message": ""}}
        assert [s.version for s in registry.statuses()] == [2, 1]
        signature = old.signatures["predict_raw"]
        assert signature.batcher is not None and UNLOAD_GRACE_SECONDS > 0
        assert signature(one_row(signature))["score"].shape == (1,)  # picked before the swap: still answers
        messages = [r.getMessage() for r in caplog.records]
        assert "model clicklog version 1 unloaded (outside --versions latest:1)" in messages
        assert any("label 'stable' points to version 1, which is no longer loaded" in m for m in messages)
        with pytest.raises(VersionNotServed) as error:
            registry.resolve(label="stable")
        assert not error.value.retryable
        assert str(error.value) == ("label 'stable' of model 'clicklog' points to version 1, which is not "
                                    "available; loaded versions: [2]")
    finally:
        done.set()
        registry.close()
    with pytest.raises(VersionUnloaded):  # closed with the registry
        signature(one_row(signature))


def test_a_broken_newest_version_leaves_the_newest_one_that_loads_serving(model_dir, add_version, attempts):
    add_version(1)
    add_version(2)
    break_version(model_dir, 3)
    registry = started(model_dir)  # as a server restarted while 3 is broken: it serves what ran before
    try:
        assert attempts == [3, 2] and registry.versions() == [2]
        assert [(s.version, s.state) for s in registry.statuses()] == [(3, "END"), (2, "AVAILABLE")]
        assert registry.status(3).error
        with pytest.raises(VersionNotServed, match="version 3 of model 'clicklog' failed to load: "):
            registry.resolve(3)
        registry.refresh()
        assert attempts == [3, 2], "an unchanged failed version is not retried"
    finally:
        registry.close()


def test_latest_n_serves_the_n_newest(model_dir, add_version, attempts):
    for version in (1, 2, 3):
        add_version(version)
    registry = started(model_dir, versions="latest:2")
    try:
        assert sorted(attempts) == [2, 3] and registry.versions() == [2, 3]
        shutil.rmtree(model_dir / "3")
        registry.refresh()  # 3 is gone: 1 is among the two newest now
        assert registry.versions() == [1, 2] and registry.status(3) is None
    finally:
        registry.close()


def test_all_serves_every_version(model_dir, add_version):
    add_version(1)
    add_version(4)
    registry = started(model_dir, versions=AllVersions())
    try:
        assert registry.versions() == [1, 4] and registry.get().version == 4 and registry.get(1).version == 1
    finally:
        registry.close()


def test_specific_serves_those_versions_and_labels_resolve_to_them(model_dir, add_version, attempts):
    for version in (1, 2, 3):
        add_version(version)
    registry = started(model_dir, versions="specific:1,3,7", version_labels={"stable": 1, "canary": 3})
    try:
        assert sorted(attempts) == [1, 3] and registry.versions() == [1, 3]
        assert registry.resolve(label="stable").version == 1 and registry.resolve(label="canary").version == 3
        assert registry.resolve().version == 3 and registry.resolve(1).version == 1
        with pytest.raises(UnknownVersionLabel) as error:
            registry.resolve(label="beta")
        assert registry.get(label="beta") is None
        assert str(error.value) == "model 'clicklog' has no version label 'beta'; its labels are stable=1, canary=3"
        with pytest.raises(VersionNotServed, match=r"version 2 of model 'clicklog' is not available; loaded "
                                                   r"versions: \[1, 3\]"):
            registry.resolve(2)
        with pytest.raises(ValueError, match="not both"):
            registry.get(1, label="stable")
    finally:
        registry.close()


@pytest.mark.parametrize("labels, why", [
    ("stable=2,old=1", "label 'old' points to version 1, which is not loaded (--versions latest:1 does not serve it"),
    ("canary=9", "label 'canary' points to version 9, which is not loaded (there is no version 9 under"),
])
def test_a_label_pointing_to_a_version_that_is_not_loaded_is_refused(model_dir, add_version, labels, why):
    add_version(1)
    add_version(2)
    registry = ModelRegistry(str(model_dir), "clicklog", batch_max_size=1, poll_seconds=0, version_labels=labels)
    with pytest.raises(VersionLabelError) as error:
        registry.start()
    assert str(error.value).startswith("--version-labels: ") and why in str(error.value)
    assert "loaded versions: [2]" in str(error.value) and "specific:V1,V2" in str(error.value)
    assert registry.versions() == [], "the refused registry is closed"


def test_nothing_loaded_yet_is_retryable_an_unknown_version_or_label_is_not(model_dir):
    registry = started(model_dir)
    try:
        with pytest.raises(VersionNotServed, match="model 'clicklog' has no loaded version yet") as error:
            registry.resolve()
        assert error.value.retryable
        with pytest.raises(VersionNotServed, match="version 1 of model 'clicklog' is not available") as error:
            registry.resolve(1)
        assert not error.value.retryable
        with pytest.raises(UnknownVersionLabel, match="has no version label 'stable'; it has no labels") as error:
            registry.label_version("stable")
        assert not error.value.retryable
    finally:
        registry.close()


# -- the command line ------------------------------------------------------------------------------


def test_mmoe_serve_passes_the_parsed_policy_and_labels_to_the_server(monkeypatch):
    import serving.launch

    calls = []
    monkeypatch.setattr(cli, "start_tensorflow_quietly", lambda verbose: None)
    monkeypatch.setattr(serving.launch, "serve", lambda *args, **kwargs: calls.append(kwargs))
    assert cli.main(["serve", "--model-base", "b", "--versions", "specific:3,4",
                     "--version-labels", "stable=3,canary=4"]) == 0
    assert calls[0]["versions"] == SpecificVersions((3, 4))
    assert calls[0]["version_labels"] == {"stable": 3, "canary": 4}
    assert cli.main(["serve", "--model-base", "b"]) == 0
    assert calls[1]["versions"] == DEFAULT_VERSION_POLICY and calls[1]["version_labels"] == {}
    assert calls[1]["grpc_port"] == 8500  # TF Serving's, beside REST's 8501
    assert cli.main(["serve", "--model-base", "b", "--no-grpc", "--max-concurrent-requests", "8"]) == 0
    assert calls[2]["grpc_port"] is None and calls[2]["max_concurrent_requests"] == 8


@pytest.mark.parametrize("argv, line", [
    (["--versions", "latest:0"], "mmoe: --versions 'latest:0' is not a version policy: N must be an integer >= 1"),
    (["--version_labels", "stable"], "mmoe: --version-labels: 'stable' is not label=version"),
])
def test_mmoe_serve_refuses_a_bad_policy_or_label_in_one_line(monkeypatch, capsys, argv, line):
    import serving.launch

    monkeypatch.setattr(cli, "start_tensorflow_quietly", lambda verbose: None)
    monkeypatch.setattr(serving.launch, "serve", lambda *args, **kwargs: pytest.fail("served despite the mistake"))
    assert cli.main(["serve", "--model-base", "b", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(line) and len(captured.err.splitlines()) == 1


def test_rest_and_grpc_requests_pick_a_version_by_label(model_dir, add_version):
    """``/v1/models/<name>/labels/<label>`` and gRPC's ``model_spec.version_label``, as TF Serving."""
    import http.client
    import json

    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, prediction_service_pb2_grpc

    from serving.grpc_service import start_grpc_server
    from serving.server import make_server

    def get(url: str, path: str) -> tuple[int, dict]:
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    add_version(1)
    add_version(2)
    with make_server(str(model_dir), poll_seconds=0, batch_max_size=1, versions="specific:1,2",
                     version_labels="stable=1,canary=2") as running:
        status, body = get(running.url, "/v1/models/clicklog/labels/stable")
        assert status == 200 and [s["version"] for s in body["model_version_status"]] == ["1"]
        for label, version in (("stable", "1"), ("canary", "2")):
            status, body = get(running.url, f"/v1/models/clicklog/labels/{label}/metadata")
            assert status == 200 and body["model_spec"]["version"] == version
        status, body = get(running.url, "/v1/models/clicklog/labels/beta/metadata")
        assert status == 400 and "has no version label 'beta'; its labels are stable=1, canary=2" in body["error"]
        server, port = start_grpc_server(running.registry, "127.0.0.1", 0, max_message_bytes=1 << 20,
                                         in_flight=running.in_flight)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                request = get_model_metadata_pb2.GetModelMetadataRequest(
                    model_spec=model_pb2.ModelSpec(name="clicklog", version_label="canary"),
                    metadata_field=["signature_def"])
                assert stub.GetModelMetadata(request, timeout=30).model_spec.version.value == 2
                request.model_spec.version_label = "beta"
                with pytest.raises(grpc.RpcError) as error:
                    stub.GetModelMetadata(request, timeout=30)
                assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            server.stop(grace=None)
