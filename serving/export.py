"""SavedModel export in TF Serving's layout, with the preprocessing inside.

``<export_base>/<spec name>/<version>/`` holds a SavedModel with the two signatures of
:mod:`serving.contract`: ``serving_default`` (serialized tf.Examples of RAW features) and
``predict_raw`` (named raw features), both answering :func:`mmoe.score.served_outputs`.

Vocabularies travel as SavedModel assets; the normalized spec is written to
``assets.extra/spec.json``. The version directory appears atomically: everything is written to a
hidden staging sibling first and renamed into place (:mod:`serving.staging`, which also removes the
staging directories of exports that were killed).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping, Sequence

import keras
import tensorflow as tf

from feature_specs.errors import UserError
from feature_specs.spec import FeatureSpec
from feature_specs.tensors import parse_examples, raw_model_inputs, raw_tensor_specs, serving_columns
from mmoe.score import served_outputs
from serving.contract import (
    DEFAULT_SIGNATURE,
    EXAMPLES_INPUT,
    RANK_SIGNATURE,
    assets_extra,
    check_version,
    existing_versions,
    model_dir,
    spec_path,
    version_dir,
)
from serving.staging import remove_stale_staging, staging_dir
from serving.table_lookup import NOT_SENT, TableLookups
from serving.warmup import write_warmup_requests

log = logging.getLogger(__name__)


class VersionExistsError(UserError, FileExistsError):
    """The version to export exists already (versions are immutable)."""


def next_version(model_base: str) -> int:
    """One more than the newest version under ``model_base``; 1 if there is none."""
    return (existing_versions(model_base) or [0])[-1] + 1


def _exists_error(final: str, model_base: str) -> VersionExistsError:
    return VersionExistsError(
        f"{final} already exists and versions are immutable: export to another version "
        f"(leave the version out to get the next free one, {next_version(model_base)}) or remove {final} first"
    )


def _outputs(spec: FeatureSpec, serving_model, inputs: dict, with_gates: bool) -> dict:
    """:func:`served_outputs` for the model's inputs: ``[batch, 1]`` per scalar feature,
    ``[batch, max_length]`` per list feature."""
    return served_outputs(spec, serving_model(inputs, training=False), with_gates)


def _table_lookups(spec: FeatureSpec, columns, snapshots) -> TableLookups | None:
    """The side tables' lookups to export, or None without ``tables:``."""
    if not spec.tables:
        return None
    names = {c.name for c in columns}
    for table in spec.tables:
        if table.key not in names:
            raise UserError(f"side table {table.name!r} is looked up by {table.key!r} at serving, which is not a "
                            f"model feature of spec {spec.name!r}: declare it under features")
    if not snapshots or any(t.name not in snapshots for t in spec.tables):
        raise UserError(f"spec {spec.name!r} has side tables ({', '.join(t.name for t in spec.tables)}): export "
                        f"needs each one's snapshot (artifacts/tables/<name>.jsonl of the preprocess run)")
    return TableLookups(spec, snapshots)


def export_saved_model(
    spec: FeatureSpec,
    serving_model: keras.Model,
    export_base: str,
    version: int | None = None,
    warmup_examples: list[bytes] | None = None,
    table_snapshots: Mapping[str, Sequence[Mapping]] | None = None,
) -> str:
    """Writes ``serving_model`` as ``<export_base>/<spec.name>/<version>`` and returns that path.

    Args:
        spec: FeatureSpec the model was trained with (its features, tasks and ranking score).
        serving_model: the serving model of :func:`mmoe.model.build_models`.
        export_base: base directory (local or any tf.io.gfile URI).
        version: integer version, 0 to ``serving.contract.MAX_VERSION``; defaults to one more
            than the newest existing version.
        warmup_examples: optional serialized tf.Examples of raw features; when given, they are
            written as TF Serving's ``assets.extra/tf_serving_warmup_requests``
            (:func:`serving.warmup.write_warmup_requests`).
        table_snapshots: side table name -> its rows (``artifacts/tables/<name>.jsonl``, read by
            :func:`serving.table_lookup.read_snapshot`), one per table of ``spec.tables``: saved
            inside the SavedModel, so both signatures look a table feature up by key where the
            request does not send it (:mod:`serving.table_lookup`).

    Raises:
        serving.contract.VersionError: if ``version`` is not an int64 >= 0 (checked before any work).
        VersionExistsError: if ``version`` already exists (versions are immutable).
    """
    model_base = model_dir(export_base, spec.name)
    version = check_version(next_version(model_base) if version is None else version)
    final = version_dir(model_base, version)
    if tf.io.gfile.exists(final):
        raise _exists_error(final, model_base)
    tf.io.gfile.makedirs(model_base)
    remove_stale_staging(model_base)
    temporary = staging_dir(model_base, version)

    columns = serving_columns(spec)
    lookups = _table_lookups(spec, columns, table_snapshots)
    looked_up = spec.table_column_names
    # a table feature absent from an Example parses as "not sent", then is looked up
    example_columns = tuple(dataclasses.replace(c, required=False, default=NOT_SENT[c.dtype])
                            if c.name in looked_up and c.list is None else c for c in columns)

    def filled(inputs):
        return lookups.fill(inputs) if lookups is not None else inputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serving_default(examples):
        return _outputs(spec, serving_model, filled(parse_examples(examples, example_columns)), with_gates=False)

    @tf.function(input_signature=[raw_tensor_specs(columns)])
    def predict_raw(raw):  # a list feature: [batch, width] padded with "" / -1, cut or padded to max_length
        return _outputs(spec, serving_model, filled(raw_model_inputs(columns, raw)), with_gates=True)

    archive = keras.export.ExportArchive()
    archive.track(serving_model)
    if lookups is not None:
        archive.track(lookups)
    archive.add_endpoint(DEFAULT_SIGNATURE, serving_default)
    archive.add_endpoint(RANK_SIGNATURE, predict_raw)
    try:
        archive.write_out(temporary, verbose=False)
        tf.io.gfile.makedirs(assets_extra(temporary))
        with tf.io.gfile.GFile(spec_path(temporary), "w") as handle:
            handle.write(spec.to_json())
        if warmup_examples:
            write_warmup_requests(temporary, list(warmup_examples), spec.name)
        try:
            tf.io.gfile.rename(temporary, final)  # refuses an existing destination
        except tf.errors.AlreadyExistsError:  # another export took this version while this one wrote
            raise _exists_error(final, model_base) from None
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.rmtree(temporary)
        raise
    log.info("exported %s", final)
    return final


def latest_export(export_base: str, name: str) -> str:
    """Path of the newest version of model ``name`` under ``export_base``."""
    model_base = model_dir(export_base, name)
    versions = existing_versions(model_base)
    if not versions:
        raise FileNotFoundError(f"no exported versions under {model_base}")
    return os.fspath(version_dir(model_base, versions[-1]))
