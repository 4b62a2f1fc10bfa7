"""tf.data input from the pipeline's gzip TFRecords of raw tf.Examples."""

from __future__ import annotations

import tensorflow as tf

from feature_specs.artifacts import Workdir, preprocess_problem
from feature_specs.errors import UserError
from feature_specs.spec import FeatureSpec, Task
from feature_specs.tensors import parse_examples, training_columns


class UnfinishedPreprocessError(UserError):
    """The workdir's data is not the output of a preprocess that passed its checks."""


def require_preprocessed(workdir: Workdir) -> None:
    """Raises unless ``workdir``'s ``report.json`` says its last preprocess completed.

    Args:
        workdir: Workdir whose ``data/`` is about to be trained on.

    Raises:
        UnfinishedPreprocessError: the report is missing, unreadable, or records a failed run
            (see :func:`feature_specs.artifacts.preprocess_problem`).
    """
    text = None
    if tf.io.gfile.exists(workdir.report_json):
        with tf.io.gfile.GFile(workdir.report_json, "rb") as handle:
            text = handle.read().decode("utf-8", errors="replace")  # bytes that are not UTF-8 fail as JSON
    problem = preprocess_problem(text)
    if problem is not None:
        raise UnfinishedPreprocessError(
            f"will not train on {workdir.root}: {problem.rstrip('.')}. Rerun `mmoe preprocess --input <log> --workdir "
            f"{workdir.root}` (after fixing the input, if a check failed), then train"
        )


def split_files(workdir: Workdir, split: str) -> list[str]:
    """Sorted shard paths of ``split`` (``train``/``eval``); raises if there are none."""
    files = sorted(tf.io.gfile.glob(workdir.split_pattern(split)))
    if not files:
        raise FileNotFoundError(
            f"no {split} shards match {workdir.split_pattern(split)}: run `mmoe preprocess` first"
        )
    return files


READERS = 4  # shards read at once; fixed, so the record order does not depend on the machine
RECORD_BLOCK = 256  # records a reader hands over at once


def read_records(files: list[str]) -> tf.data.Dataset:
    """Serialized records of the gzip TFRecord ``files``, up to :data:`READERS` shards read in parallel.

    Each reader hands over blocks of :data:`RECORD_BLOCK` records, which ``unbatch`` turns back
    into records: tf.data's parallel interleave passes elements between threads one at a time,
    and for one small record per element that hand-off costs more than reading and parsing it.
    Read, batched, parsed and preprocessed on 2 cores, ``TFRecordDataset(files,
    num_parallel_reads=AUTOTUNE)`` gave 35k examples/s, one sequential reader 205k, and this 207k
    (four shards). The order is deterministic: blocks of the shards in turn, in file order.
    """
    shards = tf.data.Dataset.from_tensor_slices(list(files))
    return shards.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP").batch(RECORD_BLOCK),
        cycle_length=min(len(files), READERS), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    ).unbatch()


def transform_label(task: Task, label: tf.Tensor) -> tf.Tensor:
    """Label as the model learns it: float32, ``log1p`` applied where the task says so."""
    label = tf.cast(label, tf.float32)
    if task.label_transform == "log1p":
        label = tf.math.log1p(tf.maximum(label, 0.0))
    return label


def split_batch(spec: FeatureSpec, parsed: dict[str, tf.Tensor]):
    """Turns a parsed batch into Keras' ``(features, labels, sample_weights)``.

    Args:
        parsed: column name -> ``(batch, 1)`` tensors (``(batch, max_length)`` for a list
            feature), from :func:`feature_specs.tensors.parse_examples`.

    Returns:
        ``features``: model and bias features, ``(batch, 1)`` each; ``labels``: task ->
        ``(batch, 1)`` float32; ``sample_weights``: task -> ``(batch,)`` float32, 1 where the
        task's label is observed (its mask column > 0), else 0.
    """
    features = {f.name: parsed[f.name] for f in spec.features}
    labels, weights = {}, {}
    for task in spec.tasks:
        labels[task.name] = transform_label(task, parsed[task.label])
        if task.mask:
            weights[task.name] = tf.cast(parsed[task.mask][:, 0] > 0, tf.float32)
        else:
            weights[task.name] = tf.ones_like(labels[task.name][:, 0])
    return features, labels, weights


def parse_batches(records: tf.data.Dataset, spec: FeatureSpec, batch_size: int) -> tf.data.Dataset:
    """Batches serialized tf.Examples, then parses every training column to ``(batch, 1)`` (a
    list feature to ``(batch, max_length)``, padded)."""
    columns = training_columns(spec)
    return records.batch(batch_size).map(
        lambda serialized: parse_examples(serialized, columns), num_parallel_calls=tf.data.AUTOTUNE
    )


def raw_batches(files: list[str], spec: FeatureSpec, batch_size: int, shuffle_buffer: int = 0, seed: int = 0):
    """Batches of parsed raw columns (all training columns), ``(batch, 1)`` each."""
    dataset = read_records(files)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return parse_batches(dataset, spec, batch_size)


def training_dataset(
    spec: FeatureSpec, workdir: Workdir, split: str, batch_size: int, shuffle: bool, seed: int = 0
) -> tf.data.Dataset:
    """``(features, labels, sample_weights)`` batches of ``split`` for ``Model.fit``/``evaluate``."""
    files = split_files(workdir, split)
    buffer = spec.training.shuffle_buffer if shuffle else 0
    return (
        raw_batches(files, spec, batch_size, buffer, seed)
        .map(lambda parsed: split_batch(spec, parsed), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
