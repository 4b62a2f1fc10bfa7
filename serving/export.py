"""SavedModel export in TF Serving's layout, with the preprocessing inside.

``<export_base>/<spec name>/<version>/`` holds a SavedModel with two signatures:

* ``serving_default``: ``examples`` (tf.string ``[None]``, serialized tf.Example of RAW features)
  -> one output per task (``click_probability``, ``engagement`` in original units, ...) and
  ``score`` ``[None]``.
* ``predict_raw``: each raw model feature as a named ``[None]`` tensor -> the same outputs plus
  ``gate_weights`` ``[None, tasks, experts]`` (gated architectures).

Vocabularies travel as SavedModel assets; the normalized spec is written to
``assets.extra/spec.json``. The version directory appears atomically: everything is written to a
temporary sibling first and renamed into place.
"""

from __future__ import annotations

import logging
import os
import uuid

import keras
import tensorflow as tf

from feature_specs.artifacts import join
from feature_specs.spec import FeatureSpec
from feature_specs.tensors import parse_spec, raw_tensor_specs, serving_columns
from mmoe.model import GATE_WEIGHTS
from mmoe.score import SCORE, ranking_score, task_predictions
from serving.warmup import write_warmup_requests

log = logging.getLogger(__name__)


def existing_versions(model_base: str) -> list[int]:
    """Integer version directories under ``model_base``, ascending."""
    if not tf.io.gfile.isdir(model_base):
        return []
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(model_base)]
    return sorted(int(name) for name in names if name.isdigit())


def _outputs(spec: FeatureSpec, serving_model, features: dict, with_gates: bool) -> dict:
    inputs = {name: tf.reshape(value, [-1, 1]) for name, value in features.items()}
    model_outputs = serving_model(inputs, training=False)
    outputs = task_predictions(spec, model_outputs)
    outputs[SCORE] = ranking_score(spec, outputs)
    if with_gates and GATE_WEIGHTS in model_outputs:
        outputs[GATE_WEIGHTS] = model_outputs[GATE_WEIGHTS]
    return outputs


def export_saved_model(
    spec: FeatureSpec,
    serving_model: keras.Model,
    export_base: str,
    version: int | None = None,
    warmup_examples: list[bytes] | None = None,
) -> str:
    """Writes ``serving_model`` as ``<export_base>/<spec.name>/<version>`` and returns that path.

    Args:
        spec: FeatureSpec the model was trained with (its features, tasks and ranking score).
        serving_model: the serving model of :func:`mmoe.model.build_models`.
        export_base: base directory (local or any tf.io.gfile URI).
        version: integer version; defaults to one more than the newest existing version.
        warmup_examples: optional serialized tf.Examples of raw features; when given, they are
            written as TF Serving's ``assets.extra/tf_serving_warmup_requests``
            (:func:`serving.warmup.write_warmup_requests`).

    Raises:
        FileExistsError: if ``version`` already exists (versions are immutable).
    """
    model_base = join(export_base, spec.name)
    version = version if version is not None else (existing_versions(model_base) or [0])[-1] + 1
    final = join(model_base, str(version))
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"{final} already exists; versions are immutable, pick another")
    tf.io.gfile.makedirs(model_base)
    temporary = join(model_base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")

    columns = serving_columns(spec)
    features = parse_spec(columns)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_default(examples):
        parsed = tf.io.parse_example(examples, features)
        return _outputs(spec, serving_model, parsed, with_gates=False)

    @tf.function(input_signature=[raw_tensor_specs(columns)])
    def predict_raw(raw):
        return _outputs(spec, serving_model, raw, with_gates=True)

    archive = keras.export.ExportArchive()
    archive.track(serving_model)
    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("predict_raw", predict_raw)
    try:
        archive.write_out(temporary, verbose=False)
        extra = join(temporary, "assets.extra")
        tf.io.gfile.makedirs(extra)
        with tf.io.gfile.GFile(join(extra, "spec.json"), "w") as handle:
            handle.write(spec.to_json())
        if warmup_examples:
            write_warmup_requests(temporary, list(warmup_examples), spec.name)
        tf.io.gfile.rename(temporary, final)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.rmtree(temporary)
        raise
    log.info("exported %s", final)
    return final


def latest_export(export_base: str, name: str) -> str:
    """Path of the newest version of model ``name`` under ``export_base``."""
    versions = existing_versions(join(export_base, name))
    if not versions:
        raise FileNotFoundError(f"no exported versions under {join(export_base, name)}")
    return os.fspath(join(export_base, name, str(versions[-1])))
