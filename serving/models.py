"""The version registry: every integer version under ``<base>/<name>/``, reloaded while serving.

A background thread polls the model directory. A new version is loaded (and warmed up with its
``assets.extra/tf_serving_warmup_requests``) before it becomes visible, so requests never see a
half-loaded model; a version that fails to load is reported in the model status and the versions
already loaded keep serving. A failed version is retried when any file under it changes (its
:func:`version_fingerprint`), so a version copied in piece by piece is loaded once it is complete,
and nothing is retried while nothing changes. Versions deleted from disk are unloaded. Only
directories named by a version number are versions (:func:`serving.contract.scan_versions`);
other visible entries are logged once and ignored, hidden ones (staging directories) silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from feature_specs.artifacts import join
from feature_specs.spec import Column, FeatureSpec
from feature_specs.spec_reader import spec_from_dict
from feature_specs.tensors import serving_columns
from serving.batching import Batcher
from serving.contract import (
    DEFAULT_SIGNATURE,
    MAX_VERSION,
    RANK_SIGNATURE,
    SIGNATURES,
    existing_versions,
    model_dir,
    saved_model_path,
    scan_versions,
    spec_path,
    version_dir,
)
from serving.warmup import read_warmup_requests

log = logging.getLogger(__name__)


@dataclass
class Signature:
    """One callable signature of a loaded version.

    Args:
        name: signature key (``serving_default``, ``predict_raw``).
        function: the concrete function; called with keyword tensors, returns a dict of tensors.
        inputs: input name -> ``tf.TensorSpec``.
        outputs: output names, sorted.
        batcher: the :class:`Batcher` in front of ``function``, or None to call it directly.
    """

    name: str
    function: object
    inputs: dict[str, tf.TensorSpec]
    outputs: list[str]
    batcher: Batcher | None = None

    def __call__(self, inputs: dict) -> dict:
        """Runs the signature on numpy inputs (batch first); returns numpy outputs."""
        if self.batcher is not None:
            return self.batcher.submit(inputs)
        return run_function(self.function, inputs)


def run_function(function, inputs: dict) -> dict:
    """Calls a signature function on numpy arrays and returns its outputs as numpy arrays."""
    outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}


def batchable(inputs: dict[str, tf.TensorSpec]) -> bool:
    """Whether requests can be concatenated: every input is a ``[None]`` vector."""
    return all(spec.shape.rank == 1 and spec.shape[0] is None for spec in inputs.values())


@dataclass
class ServedVersion:
    """One loaded version: the SavedModel, its spec, signatures and TF Serving signature metadata."""

    version: int
    path: str
    spec: FeatureSpec
    columns: tuple[Column, ...]
    signatures: dict[str, Signature]
    signature_def_json: dict
    loaded: object = field(repr=False, default=None)

    def close(self) -> None:
        for signature in self.signatures.values():
            if signature.batcher is not None:
                signature.batcher.close()


@dataclass
class VersionStatus:
    """TF Serving's ``model_version_status`` entry for one version."""

    version: int
    state: str  # AVAILABLE | LOADING | END
    error: str = ""

    def to_json(self) -> dict:
        code = "UNKNOWN" if self.error else "OK"
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": code, "error_message": self.error},
        }


def read_spec(path: str) -> FeatureSpec:
    """The spec stored with a SavedModel at ``assets.extra/spec.json``."""
    with tf.io.gfile.GFile(spec_path(path)) as handle:
        return spec_from_dict(json.load(handle), source=spec_path(path))


def signature_def_json(path: str) -> dict:
    """The SavedModel's ``signature_def`` map as TF Serving's metadata endpoint prints it."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(saved_model_path(path), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    meta_graph = saved_model.meta_graphs[0]
    return {
        key: json_format.MessageToDict(
            meta_graph.signature_def[key],
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        for key in sorted(meta_graph.signature_def)
        if not key.startswith("__")
    }


def version_fingerprint(path: str) -> str:
    """A digest of everything under a version directory: each entry's relative path, size and mtime.

    It changes whenever a file is added, removed, grown or rewritten, so a failed version is
    retried exactly when its files change.

    Args:
        path: str. A version directory (local path or tf.io.gfile URI).

    Returns:
        A hex digest; a failed listing or stat (say, a file removed mid-walk) digests its error.
    """
    entries = []
    try:
        for directory, subdirectories, files in tf.io.gfile.walk(path):
            relative = directory[len(path):].strip("/")
            for name in subdirectories:
                entries.append((join(relative, name.rstrip("/")), "directory"))
            for name in files:
                stat = tf.io.gfile.stat(join(directory, name))
                entries.append((join(relative, name), stat.length, stat.mtime_nsec))
    except tf.errors.OpError as error:
        entries = [("error", str(error))]
    return hashlib.sha256(repr(sorted(entries)).encode()).hexdigest()


def load_version(path: str, version: int, batch_max_size: int = 4096, batch_timeout_ms: float = 2.0,
                 in_flight: Callable[[], int] | None = None) -> ServedVersion:
    """Loads, checks and warms up one SavedModel version directory.

    Args:
        path: the version directory.
        version: its integer version.
        batch_max_size: rows per batched model call; 1 or less disables batching.
        batch_timeout_ms: longest wait for a batch to fill.
        in_flight: the server's count of requests in progress (see :class:`Batcher`).

    Raises:
        ValueError: if the SavedModel lacks the ``serving_default``/``predict_raw`` signatures or
            its spec does not match ``predict_raw``'s inputs.
        Exception: whatever ``tf.saved_model.load`` raises for a broken directory.
    """
    spec = read_spec(path)
    loaded = tf.saved_model.load(path)
    missing = set(SIGNATURES) - set(loaded.signatures.keys())
    if missing:
        raise ValueError(f"{path}: SavedModel lacks signature(s) {sorted(missing)}")
    signatures = {}
    for name, function in loaded.signatures.items():
        _, inputs = function.structured_input_signature
        outputs = sorted(function.structured_outputs)
        batcher = None
        if batch_max_size > 1 and batchable(inputs):
            batcher = Batcher(
                lambda batch, function=function: run_function(function, batch),
                max_size=batch_max_size,
                timeout_ms=batch_timeout_ms,
                name=f"batcher-v{version}-{name}",
                in_flight=in_flight,
            )
        signatures[name] = Signature(name, function, dict(inputs), outputs, batcher)
    columns = serving_columns(spec)
    expected = {c.name for c in columns}
    if set(signatures[RANK_SIGNATURE].inputs) != expected:
        raise ValueError(
            f"{path}: {RANK_SIGNATURE} inputs {sorted(signatures[RANK_SIGNATURE].inputs)} do not match "
            f"the spec's serving features {sorted(expected)}"
        )
    served = ServedVersion(version, path, spec, columns, signatures, signature_def_json(path), loaded)
    warm_up(served)
    return served


def warm_up(served: ServedVersion) -> None:
    """Replays the version's warmup requests (TF Serving's ``tf_serving_warmup_requests``)."""
    for request in read_warmup_requests(served.path):
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = served.signatures.get(name)
        if signature is None:
            continue
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        run_function(signature.function, inputs)


class ModelRegistry:
    """The served versions of one model, kept in step with ``<model_base>/<name>``.

    Args:
        model_dir: the model directory holding integer version subdirectories.
        name: the model name used in URLs.
        batch_max_size: largest number of rows per batched model call; 1 or less disables batching.
        batch_timeout_ms: longest time a request waits for others to join its batch.
        poll_seconds: how often the directory is rescanned; 0 disables polling.
        in_flight: the server's count of requests in progress, passed to the batchers.
    """

    def __init__(self, model_dir: str, name: str, batch_max_size: int = 4096, batch_timeout_ms: float = 2.0,
                 poll_seconds: float = 2.0, in_flight: Callable[[], int] | None = None):
        self.model_dir = model_dir
        self.name = name
        self.batch_max_size = batch_max_size
        self.batch_timeout_ms = batch_timeout_ms
        self.poll_seconds = poll_seconds
        self.in_flight = in_flight
        self._lock = threading.Lock()
        self._served: dict[int, ServedVersion] = {}
        self._status: dict[int, VersionStatus] = {}
        self._failed: dict[int, str] = {}  # version -> version_fingerprint of the directory that failed
        self._ignored: set[str] = set()  # entries of model_dir that are not versions, logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queries (thread-safe snapshots) ---------------------------------------------------------

    def versions(self) -> list[int]:
        """Loaded versions, ascending."""
        with self._lock:
            return sorted(self._served)

    def get(self, version: int | None = None) -> ServedVersion | None:
        """A loaded version, the newest when ``version`` is None; None if not loaded."""
        with self._lock:
            if version is None:
                return self._served[max(self._served)] if self._served else None
            return self._served.get(version)

    def statuses(self) -> list[VersionStatus]:
        """Status of every version seen on disk, newest first."""
        with self._lock:
            return [self._status[v] for v in sorted(self._status, reverse=True)]

    def status(self, version: int) -> VersionStatus | None:
        with self._lock:
            return self._status.get(version)

    # -- loading ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Loads versions new on disk (and failed ones whose files changed), unloads removed ones.

        Never raises for a bad version or an entry that is not a version.
        """
        versions, ignored = scan_versions(self.model_dir)
        for name in sorted(set(ignored) - self._ignored):
            log.warning("model %s: ignoring %s, which is not a version directory (a version is a directory "
                        "named by an integer from 0 to %d in plain digits)", self.name, join(self.model_dir, name),
                        MAX_VERSION)
        self._ignored = set(ignored)
        on_disk = set(versions)
        for version in sorted(on_disk - set(self.versions()), reverse=True):
            self._load(version)
        for version in set(self.versions()) - on_disk:
            self._unload(version)
        with self._lock:
            for version in set(self._status) - on_disk:
                if version not in self._served:
                    del self._status[version]
                    self._failed.pop(version, None)

    def _load(self, version: int) -> None:
        path = version_dir(self.model_dir, version)
        fingerprint = version_fingerprint(path)  # taken before loading: a copy still running changes it
        if version in self._failed:
            if self._failed[version] == fingerprint:
                return  # failed before and unchanged since: do not retry every poll
            log.info("model %s version %d changed on disk since it failed to load; retrying", self.name, version)
        with self._lock:
            self._status[version] = VersionStatus(version, "LOADING")
        try:
            served = load_version(path, version, self.batch_max_size, self.batch_timeout_ms, self.in_flight)
        except Exception as error:  # any failure of one version must not affect the others
            message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
            log.error("model %s version %d failed to load: %s", self.name, version, message)
            with self._lock:
                self._failed[version] = fingerprint
                self._status[version] = VersionStatus(version, "END", message)
            return
        with self._lock:
            self._served[version] = served
            self._status[version] = VersionStatus(version, "AVAILABLE")
            self._failed.pop(version, None)
        log.info("model %s version %d is available (%s)", self.name, version, path)

    def _unload(self, version: int) -> None:
        with self._lock:
            served = self._served.pop(version, None)
            self._status.pop(version, None)
        if served is not None:
            served.close()
            log.info("model %s version %d unloaded (removed from disk)", self.name, version)

    # -- polling ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Loads what is on disk now, then polls in a daemon thread (if ``poll_seconds`` > 0)."""
        self.refresh()
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name=f"poll-{self.name}", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a transient filesystem error must not end polling
                log.exception("scanning %s failed", self.model_dir)

    def close(self) -> None:
        """Stops polling and the batchers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            served, self._served = list(self._served.values()), {}
        for version in served:
            version.close()


def resolve_model_dir(model_base: str, model_name: str | None) -> tuple[str, str]:
    """``(model directory, model name)`` for ``serve(model_base, model_name)``.

    With ``model_name``, versions live under ``<model_base>/<model_name>``. Without it,
    ``model_base`` is either an export base holding exactly one model directory, or a model
    directory itself (it holds integer versions; its basename is the name).

    Raises:
        FileNotFoundError: if nothing servable is found, with what was looked for.
    """
    base = model_base.rstrip("/")
    if model_name:
        return model_dir(base, model_name), model_name
    if existing_versions(base):
        return base, base.rsplit("/", 1)[-1]
    if tf.io.gfile.isdir(base):
        names = [n.rstrip("/") for n in tf.io.gfile.listdir(base)]
        models = sorted(n for n in names if not n.startswith(".") and existing_versions(model_dir(base, n)))
        if len(models) == 1:
            return model_dir(base, models[0]), models[0]
        if len(models) > 1:
            raise FileNotFoundError(f"{base} holds several models {models}; pass model_name to pick one")
    raise FileNotFoundError(
        f"no SavedModel versions under {base} (expected {base}/<name>/<integer version>/ or "
        f"{base}/<integer version>/); export one first, e.g. with `mmoe run` or `mmoe export`"
    )
