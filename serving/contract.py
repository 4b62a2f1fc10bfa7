"""The SavedModel contract: signature names, input and output names, and the export layout.

Everything that writes a SavedModel (:mod:`serving.export`, :mod:`serving.warmup`) and everything
that reads one (:mod:`serving.models`, the REST endpoints) takes these names from here.

Signatures:

* :data:`DEFAULT_SIGNATURE` (``serving_default``): :data:`EXAMPLES_INPUT` (``examples``,
  tf.string ``[None]``, serialized tf.Examples of raw features) -> each task's
  ``output_name(task)`` and :data:`SCORE`, ``[None]``.
* :data:`RANK_SIGNATURE` (``predict_raw``): each raw model feature as a named ``[None]`` tensor (a
  list feature as ``[None, None]``: rows padded with ``""`` / -1 to a common width, cut or padded
  to the spec's ``max_length`` inside) -> the same outputs plus :data:`GATE_WEIGHTS` ``[None,
  tasks, experts]`` (gated architectures). Padded dense tensors, not ragged ones, so TF Serving's
  REST and gRPC APIs (which know no ragged inputs) can send them.

The output names are defined by the model side (:mod:`mmoe.score`, :mod:`mmoe.model`) and only
re-exported here.

Layout of an export base::

    <export_base>/<model name>/<integer version>/     a SavedModel (saved_model.pb, variables/, ...)
        assets.extra/spec.json                        the normalized spec it was trained with
        assets.extra/tf_serving_warmup_requests       optional warmup requests (serving.warmup)
    <export_base>/<model name>/.<anything>/           hidden: never a version (temporary exports)

A version is TF Serving's int64 >= 0 (:data:`MAX_VERSION`), and its directory is named by that
number written plainly: ASCII decimal digits, no sign, no leading zeros (:func:`parse_version`),
so that :func:`version_dir` of the number is the directory it was read from. Version numbers are
defined, with the version policy and labels, in the plain-Python :mod:`serving.versions` and
re-exported here.
"""

from __future__ import annotations

import tensorflow as tf

from feature_specs.artifacts import join
from mmoe.model import GATE_WEIGHTS
from mmoe.score import SCORE, output_name, prediction_names
from serving.versions import MAX_VERSION, VersionError, check_version, parse_version

__all__ = [
    "ASSETS_EXTRA", "DEFAULT_SIGNATURE", "EXAMPLES_INPUT", "GATE_WEIGHTS", "MAX_VERSION", "RANK_SIGNATURE",
    "SAVED_MODEL_FILE", "SCORE", "SIGNATURES", "SPEC_FILE", "VersionError", "WARMUP_FILE", "assets_extra",
    "check_version", "existing_versions", "model_dir", "output_name", "parse_version", "prediction_names",
    "saved_model_path", "scan_versions", "spec_path", "version_dir", "warmup_path",
]

DEFAULT_SIGNATURE = "serving_default"
RANK_SIGNATURE = "predict_raw"
SIGNATURES = (DEFAULT_SIGNATURE, RANK_SIGNATURE)  # every export has both
EXAMPLES_INPUT = "examples"

SAVED_MODEL_FILE = "saved_model.pb"
ASSETS_EXTRA = "assets.extra"
SPEC_FILE = "spec.json"
WARMUP_FILE = "tf_serving_warmup_requests"


def model_dir(export_base: str, name: str) -> str:
    """``<export_base>/<name>``: the directory holding model ``name``'s versions."""
    return join(export_base, name)


def version_dir(model_base: str, version: int) -> str:
    """``<model_base>/<version>``: one version's SavedModel directory."""
    return join(model_base, str(version))


def scan_versions(model_base: str) -> tuple[list[int], list[str]]:
    """``(versions, ignored)`` of a model directory; ``([], [])`` if it does not exist.

    Args:
        model_base: str. A model directory (local path or tf.io.gfile URI).

    Returns:
        versions: the ints of the subdirectories named by :func:`parse_version`, ascending.
        ignored: the other visible entry names (files, odd names such as ``"²"``), sorted; hidden
            entries (a leading ``.``, such as temporary exports) are in neither list.
    """
    if not tf.io.gfile.isdir(model_base):
        return [], []
    versions, ignored = [], []
    for name in sorted(entry.rstrip("/") for entry in tf.io.gfile.listdir(model_base)):
        if name.startswith("."):
            continue
        version = parse_version(name)
        if version is not None and tf.io.gfile.isdir(join(model_base, name)):
            versions.append(version)
        else:
            ignored.append(name)
    return sorted(versions), ignored


def existing_versions(model_base: str) -> list[int]:
    """Version directories under ``model_base`` (see :func:`scan_versions`), ascending; [] if none."""
    return scan_versions(model_base)[0]


def saved_model_path(export_dir: str) -> str:
    """``<version>/saved_model.pb``: the SavedModel proto (its signature_def map)."""
    return join(export_dir, SAVED_MODEL_FILE)


def assets_extra(export_dir: str) -> str:
    """``<version>/assets.extra``: files TF Serving ignores but keeps with the SavedModel."""
    return join(export_dir, ASSETS_EXTRA)


def spec_path(export_dir: str) -> str:
    """``<version>/assets.extra/spec.json``: the spec stored with a SavedModel."""
    return join(export_dir, ASSETS_EXTRA, SPEC_FILE)


def warmup_path(export_dir: str) -> str:
    """``<version>/assets.extra/tf_serving_warmup_requests``: TF Serving's warmup file."""
    return join(export_dir, ASSETS_EXTRA, WARMUP_FILE)
