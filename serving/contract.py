"""The SavedModel contract: signature names, input and output names, and the export layout.

Everything that writes a SavedModel (:mod:`serving.export`, :mod:`serving.warmup`) and everything
that reads one (:mod:`serving.models`, the REST endpoints) takes these names from here.

Signatures:

* :data:`DEFAULT_SIGNATURE` (``serving_default``): :data:`EXAMPLES_INPUT` (``examples``,
  tf.string ``[None]``, serialized tf.Examples of raw features) -> each task's
  ``output_name(task)`` and :data:`SCORE`, ``[None]``.
* :data:`RANK_SIGNATURE` (``predict_raw``): each raw model feature as a named ``[None]`` tensor ->
  the same outputs plus :data:`GATE_WEIGHTS` ``[None, tasks, experts]`` (gated architectures).

The output names are defined by the model side (:mod:`mmoe.score`, :mod:`mmoe.model`) and only
re-exported here.

Layout of an export base::

    <export_base>/<model name>/<integer version>/     a SavedModel (saved_model.pb, variables/, ...)
        assets.extra/spec.json                        the normalized spec it was trained with
        assets.extra/tf_serving_warmup_requests       optional warmup requests (serving.warmup)
"""

from __future__ import annotations

import tensorflow as tf

from feature_specs.artifacts import join
from mmoe.model import GATE_WEIGHTS
from mmoe.score import SCORE, output_name, prediction_names

__all__ = [
    "ASSETS_EXTRA", "DEFAULT_SIGNATURE", "EXAMPLES_INPUT", "GATE_WEIGHTS", "RANK_SIGNATURE", "SAVED_MODEL_FILE",
    "SCORE", "SIGNATURES", "SPEC_FILE", "WARMUP_FILE", "assets_extra", "existing_versions", "model_dir",
    "output_name", "prediction_names", "saved_model_path", "spec_path", "version_dir", "warmup_path",
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


def existing_versions(model_base: str) -> list[int]:
    """Integer version directories under ``model_base``, ascending; [] if it does not exist."""
    if not tf.io.gfile.isdir(model_base):
        return []
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(model_base)]
    return sorted(int(name) for name in names if name.isdigit())


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
