"""Training input: the pipeline's TFRecords as preprocessed, optionally cached, distributed batches.

Records (read in parallel, :func:`mmoe.data.read_records`) -> shuffle -> batch -> parse -> the
model's preprocessing layers (lookups, bucketizing, normalizing), in tf.data, in parallel and
prefetched. With ``training.cache`` the preprocessed train batches are kept in memory after the
first epoch, when the train split fits in :data:`CACHE_MEMORY_SHARE` of the available memory.
The step sees only integer indices and floats, so it can be XLA-compiled. Across replicas every
batch is padded to the full per-replica size (:func:`pad_rows`).
"""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec import FeatureSpec
from mmoe.data import parse_batches, read_records, split_batch, split_files

log = logging.getLogger(__name__)

CACHED_BATCH_SHUFFLE = 4096  # batches whose order a cached epoch shuffles
CACHE_MEMORY_SHARE = 0.5  # the most of the available memory the train cache may take


def pad_rows(batch, rows: int):
    """Pads every tensor of ``batch`` (a nest of ``(n, ...)`` tensors, ``n <= rows``) with zero
    rows to the static shape ``(rows, ...)``.

    Across replicas each step's embedding gradients are all-gathered, and every replica must
    bring the same shapes, step after step of one compiled loop: an epoch's partial last batch
    (or the empty batch of a worker whose shard ran out first) is padded to a full one.
    The padded rows have zero sample weights, so they add nothing to a loss sum or a count (an
    auxiliary loss over the whole batch, the gates' load balancing, does see them on that step).
    """
    batch = tf.nest.map_structure(tf.convert_to_tensor, batch)
    missing = rows - tf.shape(tf.nest.flatten(batch)[0])[0]  # every tensor has the batch's rows
    tf.debugging.assert_non_negative(missing, message=f"a batch has more than {rows} rows")

    def pad(tensor):
        padded = tf.pad(tensor, [[0, missing]] + [[0, 0]] * (tensor.shape.rank - 1))
        return tf.ensure_shape(padded, [rows, *tensor.shape[1:]])

    return tf.nest.map_structure(pad, batch)


def available_memory_bytes() -> int | None:
    """The memory the kernel can give this process now (``MemAvailable``, Linux), else None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def example_bytes(element_spec) -> int:
    """Bytes of one example of a batched dataset whose ``element_spec`` is a nest of
    ``(batch, ...)`` tensor specs (the batch dimension excluded)."""
    return sum(
        int(np.prod([d or 1 for d in spec.shape[1:]])) * spec.dtype.size for spec in tf.nest.flatten(element_spec)
    )


class InputPipeline:
    """Preprocessed ``(features, labels, sample_weights)`` batches of a run's splits.

    Args:
        spec: FeatureSpec. Features, tasks and ``training`` (``batch_size``, the global batch;
            ``shuffle_buffer``, ``seed``, ``cache``).
        workdir: Workdir holding ``data/`` (the splits) and ``report.json`` (their row counts).
        preprocess: the models' ``preprocess`` model, raw ``(batch, 1)`` features -> ``(batch, 1)``
            int64 indices or float32 values.
        strategy: the ``tf.distribute`` strategy the batches are distributed with.

    Attributes:
        pad_to: rows every replica's batch is padded to (:func:`pad_rows`), ``ceil(batch_size /
            replicas)``; None with one replica.
        cached_train: the train split's cached batches once made (``training.cache``), else None.
    """

    def __init__(self, spec: FeatureSpec, workdir: Workdir, preprocess: keras.Model, strategy: tf.distribute.Strategy):
        self.spec, self.workdir, self.preprocess, self.strategy = spec, workdir, preprocess, strategy
        self.settings = spec.training
        # tf.distribute splits each global batch_size batch among the replicas.
        replicas = strategy.num_replicas_in_sync
        self.pad_to = -(-self.settings.batch_size // replicas) if replicas > 1 else None
        self.cached_train: tf.data.Dataset | None = None
        self._cache_refused = False  # training.cache is on, but the train split would not fit

    def pad(self, batch):
        """``batch`` (a nest of ``(n, ...)`` tensors) padded to :attr:`pad_to` rows; as it is with one replica."""
        return batch if self.pad_to is None else pad_rows(batch, self.pad_to)

    def _preprocessed_batches(self, split: str, shuffle_seed: int | None) -> tf.data.Dataset:
        """Records (shuffled with ``shuffle_seed`` unless None) -> batch -> parse -> preprocess."""
        records = read_records(split_files(self.workdir, split))
        if shuffle_seed is not None and self.settings.shuffle_buffer:
            records = records.shuffle(self.settings.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        preprocess, spec = self.preprocess, self.spec

        def to_model_inputs(parsed):
            features, labels, weights = split_batch(spec, parsed)
            return preprocess(features, training=False), labels, weights

        batches = parse_batches(records, spec, self.settings.batch_size)
        return batches.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE)

    def train_rows(self) -> int | None:
        """Rows of the train split, from the pipeline's ``report.json``; None without one."""
        if not tf.io.gfile.exists(self.workdir.report_json):
            return None
        with tf.io.gfile.GFile(self.workdir.report_json) as handle:
            return json.load(handle).get("written", {}).get("train") or None

    def _cache_fits(self, batches: tf.data.Dataset) -> bool:
        """Whether the preprocessed train split (``batches``) fits in :data:`CACHE_MEMORY_SHARE`
        of the available memory; when it does not, says so and why. Rows come from the
        pipeline's report; without one (or on a platform that does not report free memory) the
        cache is used as asked."""
        available = available_memory_bytes()
        rows = self.train_rows()
        if available is None or not rows:
            return True
        workers = max(1, self.strategy.num_replicas_in_sync)  # each caches its own shard (a replica per worker on CPU)
        need = rows / workers * example_bytes(batches.element_spec)
        if need <= CACHE_MEMORY_SHARE * available:
            return True
        log.warning("training.cache is on, but the %s train rows would take %.1f GB in memory, more than %d%% of "
                    "the %.1f GB available: training reads the TFRecords every epoch instead",
                    f"{rows:,}", need / 1e9, 100 * CACHE_MEMORY_SHARE, available / 1e9)
        return False

    def _train_batches(self, epoch: int, cache: bool) -> tf.data.Dataset:
        if cache and self.cached_train is None and not self._cache_refused:
            batches = self._preprocessed_batches("train", self.settings.seed)
            # Examples are shuffled once, then whole preprocessed batches are cached in memory and
            # their order is reshuffled each epoch: input costs nothing after the first epoch.
            if self._cache_fits(batches):
                self.cached_train = batches.cache()
            else:
                self._cache_refused = True
        if not cache or self.cached_train is None:
            return self._preprocessed_batches("train", self.settings.seed + epoch)
        return self.cached_train.shuffle(CACHED_BATCH_SHUFFLE, seed=self.settings.seed + epoch,
                                         reshuffle_each_iteration=False)

    def dataset(self, split: str, epoch: int = 0, skip_batches: int = 0, cache: bool | None = None) -> tf.data.Dataset:
        """Preprocessed ``(features, labels, sample_weights)`` batches of ``split``.

        Train batches are shuffled with ``seed + epoch``, so epoch ``e`` sees the same order in
        a resumed run; ``skip_batches`` drops the batches a resumed epoch has already trained on.
        With ``training.cache`` the preprocessed train batches are kept in memory after the
        first epoch (examples shuffled once, batch order reshuffled every epoch); ``cache``
        overrides that setting.
        Features are ``(batch, 1)`` int indices / float values; labels ``(batch, 1)`` float32;
        sample weights ``(batch,)`` float32 (the task's mask).
        """
        if split == "train":
            batches = self._train_batches(epoch, self.settings.cache if cache is None else cache)
        else:
            batches = self._preprocessed_batches(split, None)
        if skip_batches:
            batches = batches.skip(skip_batches)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return batches.prefetch(tf.data.AUTOTUNE).with_options(options)

    def distributed(self, split: str, epoch: int = 0, skip_batches: int = 0) -> tf.distribute.DistributedDataset:
        """:meth:`dataset` distributed over the strategy's replicas (each worker reads its shard
        of the records), as ``strategy.run`` steps take it."""
        return self.strategy.experimental_distribute_dataset(self.dataset(split, epoch, skip_batches))
