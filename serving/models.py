"""The version registry: the versions under ``<base>/<name>/`` that the version policy serves, reloaded while serving.

A background thread polls the model directory. The version policy (:mod:`serving.versions`, TF
Serving's ``model_version_policy``: ``latest:N``, default ``latest:1``; ``all``; ``specific:V,...``)
chooses the versions to serve among those on disk; versions outside it are never loaded. A new
version is loaded (and warmed up with its ``assets.extra/tf_serving_warmup_requests``) before it
becomes visible, so requests never see a half-loaded model, and only then are the versions it
displaces unloaded: under ``latest:1`` there is never a moment without a version. A version
displaced by the policy is reported ``END`` (without error) while it stays on disk; its batchers
are closed at the first rescan :data:`UNLOAD_GRACE_SECONDS` or more later (or when the registry
closes), so that requests that picked it just before finish on it.

A version that fails to load is reported in the model status (``END`` with its error) and the
policy chooses again without it: as in TF Serving, under ``latest:1`` a failed newest version
leaves the previous version serving (and a server started while the newest version is broken
serves the newest one that loads, so a restart serves what the running process served). A failed
version is retried when any file under it changes (its :func:`version_fingerprint`), so a version
copied in piece by piece is loaded once it is complete, and replaces the previous one then;
nothing is retried while nothing changes. Versions deleted from disk are unloaded and forgotten.
Only directories named by a version number are versions (:func:`serving.contract.scan_versions`);
other visible entries are logged once and ignored, hidden ones (staging directories) silently.

Version labels (TF Serving's ``version_labels``, e.g. ``{"stable": 3, "canary": 4}``) name versions
for requests (:meth:`ModelRegistry.resolve`); as in TF Serving, each must point to a loaded version
when the registry starts. A label whose version the policy later unloads is logged, and requests
for it are answered "not loaded": labels go with ``specific:`` (or a ``latest:N`` covering them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from feature_specs.artifacts import join
from feature_specs.spec import Column, FeatureSpec
from feature_specs.spec_nodes import quoted
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
from serving.errors import RequestError
from serving.versions import (
    DEFAULT_VERSION_POLICY,
    VERSION_LABELS_FLAG,
    VERSIONS_FLAG,
    VersionLabelError,
    VersionPolicy,
    as_version_labels,
    as_version_policy,
)
from serving.warmup import read_warmup_requests

log = logging.getLogger(__name__)

UNLOAD_GRACE_SECONDS = 5.0  # an unloaded version's batchers stay open this long for requests that picked it


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


class VersionNotServed(LookupError):
    """The version (or label) a request asked for is not served; the message says why.

    Args:
        message: str. What was asked for, and what is loaded instead.
        retryable: bool. True when no version of the model is loaded yet (HTTP 503, gRPC
            UNAVAILABLE); False for a version or label that is not served (404, NOT_FOUND).
    """

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class UnknownVersionLabel(VersionNotServed):
    """A label the registry does not have: a bad argument, as TF Serving answers it (HTTP 400, gRPC
    INVALID_ARGUMENT, "Unrecognized servable version label"), not a version that is missing."""


class ModelRegistry:
    """The served versions of one model, kept in step with ``<model_base>/<name>`` and the version policy.

    Args:
        model_dir: the model directory holding integer version subdirectories.
        name: the model name used in URLs.
        batch_max_size: largest number of rows per batched model call; 1 or less disables batching.
        batch_timeout_ms: longest time a request waits for others to join its batch.
        poll_seconds: how often the directory is rescanned; 0 disables polling.
        in_flight: the server's count of requests in progress, passed to the batchers.
        versions: the version policy (:mod:`serving.versions`), or its text (``"latest:2"``,
            ``"all"``, ``"specific:1,3"``). Defaults to ``latest:1``, TF Serving's default.
        version_labels: label (str) -> version (int), or its text (``"stable=3,canary=4"``);
            each must point to a loaded version once :meth:`start` has loaded. Defaults to none.

    Raises:
        VersionPolicyError, VersionLabelError: for a policy or labels that are malformed.
    """

    def __init__(self, model_dir: str, name: str, batch_max_size: int = 4096, batch_timeout_ms: float = 2.0,
                 poll_seconds: float = 2.0, in_flight: Callable[[], int] | None = None,
                 versions: VersionPolicy | str = DEFAULT_VERSION_POLICY,
                 version_labels: Mapping[str, int] | str | None = None):
        self.model_dir = model_dir
        self.name = name
        self.batch_max_size = batch_max_size
        self.batch_timeout_ms = batch_timeout_ms
        self.poll_seconds = poll_seconds
        self.in_flight = in_flight
        self.policy = as_version_policy(versions)
        self.labels = as_version_labels(version_labels)
        self._lock = threading.Lock()
        self._served: dict[int, ServedVersion] = {}
        self._status: dict[int, VersionStatus] = {}
        self._failed: dict[int, str] = {}  # version -> version_fingerprint of the directory that failed
        self._retiring: list[tuple[float, ServedVersion]] = []  # (when to close, unloaded version)
        self._ignored: set[str] = set()  # entries of model_dir that are not versions, logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queries (thread-safe snapshots) ---------------------------------------------------------

    def versions(self) -> list[int]:
        """Loaded versions, ascending."""
        with self._lock:
            return sorted(self._served)

    def get(self, version: int | None = None, label: str | None = None) -> ServedVersion | None:
        """A loaded version: the one named by ``version`` or by ``label``, the newest when neither.

        Args:
            version: int or None. A version number.
            label: str or None. A version label (:attr:`labels`); at most one of the two.

        Returns:
            The :class:`ServedVersion`, or None if it is not loaded (or the label is unknown).
        """
        if version is not None and label is not None:
            raise ValueError(f"pass a version or a label, not both (got version {version}, label {label!r})")
        if label is not None:
            version = self.labels.get(label)
            if version is None:
                return None
        with self._lock:
            if version is None:
                return self._served[max(self._served)] if self._served else None
            return self._served.get(version)

    def resolve(self, version: int | None = None, label: str | None = None) -> ServedVersion:
        """:meth:`get`, or an error that says why the version asked for is not served.

        Args:
            version, label: as for :meth:`get`.

        Raises:
            UnknownVersionLabel: for a label the registry does not have.
            VersionNotServed: ``retryable`` when nothing is loaded yet and neither was given;
                otherwise for a version (or a label's version) that is not loaded, with its load
                error when it failed.
        """
        served = self.get(version, label)
        if served is not None:
            return served
        if label is not None:
            version = self.label_version(label)
            asked = f"label {label!r} of model {self.name!r} points to version {version}, which"
        elif version is None:
            raise VersionNotServed(f"model {self.name!r} has no loaded version yet", retryable=True)
        else:
            asked = f"version {version} of model {self.name!r}"
        status = self.status(version)
        if status is not None and status.error:
            raise VersionNotServed(f"{asked} failed to load: {status.error}")
        raise VersionNotServed(f"{asked} is not available; loaded versions: {self.versions()}")

    def label_version(self, label: str) -> int:
        """The version ``label`` points to (loaded or not: see :meth:`resolve`).

        Raises:
            UnknownVersionLabel: for a label the registry does not have, naming those it has.
        """
        if label not in self.labels:
            known = ", ".join(f"{name}={version}" for name, version in self.labels.items())
            raise UnknownVersionLabel(f"model {self.name!r} has no version label {quoted(label)}; "
                                   + (f"its labels are {known}" if known else "it has no labels"))
        return self.labels[label]

    def statuses(self) -> list[VersionStatus]:
        """Status of every version loaded, tried or unloaded that is still on disk, newest first."""
        with self._lock:
            return [self._status[v] for v in sorted(self._status, reverse=True)]

    def status(self, version: int) -> VersionStatus | None:
        with self._lock:
            return self._status.get(version)

    def reported_statuses(self, version: int | None = None) -> list[VersionStatus]:
        """What a status request answers (REST's ``model_version_status``, gRPC's GetModelStatus):
        every version's status, newest first, or only ``version``'s.

        Raises:
            RequestError: 404 for a version never seen, or a model with no versions yet.
        """
        statuses = self.statuses()
        if version is not None:
            statuses = [s for s in statuses if s.version == version]
            if not statuses:
                raise RequestError(f"version {version} of model {self.name!r} was not found", 404)
        elif not statuses:
            raise RequestError(f"model {self.name!r} has no versions yet under {self.model_dir}", 404)
        return statuses

    # -- loading ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Loads the versions the policy chooses among those on disk, then unloads the others.

        Never raises for a bad version or an entry that is not a version.
        """
        versions, ignored = scan_versions(self.model_dir)
        for name in sorted(set(ignored) - self._ignored):
            log.warning("model %s: ignoring %s, which is not a version directory (a version is a directory "
                        "named by an integer from 0 to %d in plain digits)", self.name, join(self.model_dir, name),
                        MAX_VERSION)
        self._ignored = set(ignored)
        wanted = self._load_wanted(versions)
        for version in sorted(set(self.versions()) - wanted):
            self._unload(version, on_disk=version in versions)
        with self._lock:
            for version in set(self._status) - set(versions):
                if version not in self._served:
                    del self._status[version]
                    self._failed.pop(version, None)
        self._close_retired()

    def _load_wanted(self, versions: list[int]) -> set[int]:
        """Loads the policy's choice among ``versions`` (on disk); returns it, every one loaded.

        A version that fails is left out and the policy chooses again without it, so under
        ``latest:N`` the next newest version takes its place.
        """
        unusable: set[int] = set()
        while True:
            wanted = self.policy.select(v for v in versions if v not in unusable)
            loaded = set(self.versions())
            missing = [v for v in wanted if v not in loaded]
            if not missing:
                return set(wanted)
            for version in missing:
                if not self._load(version):
                    unusable.add(version)

    def _load(self, version: int) -> bool:
        """Loads ``version``; False if it fails (or failed before and is unchanged since)."""
        path = version_dir(self.model_dir, version)
        fingerprint = version_fingerprint(path)  # taken before loading: a copy still running changes it
        if version in self._failed:
            if self._failed[version] == fingerprint:
                return False  # failed before and unchanged since: do not retry every poll
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
            return False
        with self._lock:
            self._served[version] = served
            self._status[version] = VersionStatus(version, "AVAILABLE")
            self._failed.pop(version, None)
        log.info("model %s version %d is available (%s)", self.name, version, path)
        return True

    def _unload(self, version: int, on_disk: bool) -> None:
        """Stops serving ``version``: reported END while ``on_disk``, forgotten otherwise."""
        with self._lock:
            served = self._served.pop(version, None)
            if on_disk:
                self._status[version] = VersionStatus(version, "END")
            else:
                self._status.pop(version, None)
        if served is None:
            return
        self._retiring.append((time.monotonic() + UNLOAD_GRACE_SECONDS, served))
        why = f"outside {VERSIONS_FLAG} {self.policy}" if on_disk else "removed from disk"
        log.info("model %s version %d unloaded (%s)", self.name, version, why)
        for label, labelled in self.labels.items():
            if labelled == version:
                log.warning("model %s: label %r points to version %d, which is no longer loaded (%s)",
                            self.name, label, version, why)

    def _close_retired(self, now: float | None = None) -> None:
        """Closes the unloaded versions whose grace period is over (all of them when ``now`` is inf)."""
        now = time.monotonic() if now is None else now
        due = [served for deadline, served in self._retiring if deadline <= now]
        self._retiring = [(deadline, served) for deadline, served in self._retiring if deadline > now]
        for served in due:
            served.close()

    def _check_labels(self) -> None:
        """Raises VersionLabelError for a label whose version is not loaded (TF Serving's default)."""
        loaded = self.versions()
        for label, version in self.labels.items():
            if version not in loaded:
                status = self.status(version)
                if status is not None and status.error:
                    why = f"it failed to load: {status.error}"
                elif version not in existing_versions(self.model_dir):
                    why = f"there is no version {version} under {self.model_dir}"
                else:
                    why = f"{VERSIONS_FLAG} {self.policy} does not serve it"
                raise VersionLabelError(
                    f"{VERSION_LABELS_FLAG}: label {label!r} points to version {version}, which is not loaded "
                    f"({why}; loaded versions: {loaded}); a label may only point to a loaded version, e.g. pick "
                    f"the labelled versions with {VERSIONS_FLAG} specific:V1,V2"
                )

    # -- polling ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Loads what the policy serves now, checks the labels, then polls in a daemon thread
        (if ``poll_seconds`` > 0).

        Raises:
            VersionLabelError: if a label points to a version that is not loaded (the registry
                is closed first).
        """
        self.refresh()
        try:
            self._check_labels()
        except VersionLabelError:
            self.close()
            raise
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
        """Stops polling and the batchers (also those of versions still in their grace period)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            served, self._served = list(self._served.values()), {}
        for version in served:
            version.close()
        self._close_retired(now=float("inf"))


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
