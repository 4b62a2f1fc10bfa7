"""Input encoder: Keras preprocessing layers built from the spec and the pipeline's artifacts.

Each raw feature becomes a dense block inside the model, so the exported SavedModel takes raw
values and carries its vocabularies (as assets) and statistics (as constants):

============  =====================================================  ===========================
transform     layers                                                  output
============  =====================================================  ===========================
vocabulary    StringLookup / IntegerLookup (vocabulary file) + Embedding  ``(batch, embedding_dim)``
hashing       Hashing(num_bins) + Embedding                            ``(batch, embedding_dim)``
quantile      Discretization(train-split boundaries) + Embedding       ``(batch, embedding_dim)``
zscore        Normalization(mean, variance)                            ``(batch, 1)``
log1p         Log1p + Normalization(mean, variance of log1p)           ``(batch, 1)``
============  =====================================================  ===========================
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
import tensorflow as tf

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec import Feature
from mmoe.layers import CastToFloat, Log1p


def load_statistics(workdir: Workdir) -> Statistics:
    """Reads ``artifacts/statistics.json`` (any tf.io.gfile path)."""
    if not tf.io.gfile.exists(workdir.statistics_json):
        raise FileNotFoundError(
            f"{workdir.statistics_json} is missing: run `mmoe preprocess --workdir {workdir.root}` first"
        )
    with tf.io.gfile.GFile(workdir.statistics_json, "r") as handle:
        return Statistics.from_json(handle.read())


def _embed(feature: Feature, indices, input_dim: int, prefix: str):
    x = keras.layers.Embedding(input_dim, feature.embedding_dim, name=f"{prefix}{feature.name}_embedding")(indices)
    return keras.layers.Reshape((feature.embedding_dim,), name=f"{prefix}{feature.name}_flat")(x)


def _normalization(feature: Feature, statistics: Statistics, prefix: str) -> keras.layers.Normalization:
    stats = statistics.numeric.get(feature.name)
    if stats is None:
        raise KeyError(f"statistics.json has no numeric statistics for feature {feature.name!r}")
    return keras.layers.Normalization(
        mean=stats.mean, variance=max(stats.variance, 1e-12), name=f"{prefix}{feature.name}_normalize"
    )


def encode_feature(feature: Feature, raw, workdir: Workdir, statistics: Statistics, prefix: str = ""):
    """Applies ``feature``'s transform to its raw input of shape ``(batch, 1)``.

    Layer names start with ``prefix``, so independent encoders (single-task models) can coexist.

    Returns:
        A float tensor of shape ``(batch, embedding_dim)`` for categorical transforms or
        ``(batch, 1)`` for numeric ones.
    """
    name, transform = f"{prefix}{feature.name}", feature.transform
    if transform == "vocabulary":
        size = statistics.vocabulary_sizes.get(feature.name, 0)
        if size == 0:
            raise ValueError(
                f"feature {name!r}: its vocabulary is empty (no value reached min_count "
                f"{feature.min_count} in the train split)"
            )
        lookup_cls = keras.layers.StringLookup if feature.dtype == "string" else keras.layers.IntegerLookup
        lookup = lookup_cls(
            vocabulary=workdir.vocabulary_file(feature.name),
            num_oov_indices=feature.num_oov,
            mask_token=None,
            name=f"{name}_lookup",
        )
        return _embed(feature, lookup(raw), size + feature.num_oov, prefix)
    if transform == "hashing":
        hashed = keras.layers.Hashing(num_bins=feature.num_bins, name=f"{name}_hash")(raw)
        return _embed(feature, hashed, feature.num_bins, prefix)
    if transform == "quantile":
        boundaries = statistics.quantiles.get(feature.name)
        if boundaries is None:
            raise KeyError(f"statistics.json has no quantile boundaries for feature {name!r}")
        buckets = keras.layers.Discretization(
            bin_boundaries=list(boundaries), output_mode="int", name=f"{name}_bucketize"
        )(CastToFloat(name=f"{name}_float")(raw))
        return _embed(feature, buckets, len(boundaries) + 1, prefix)
    if transform == "zscore":
        return _normalization(feature, statistics, prefix)(CastToFloat(name=f"{name}_float")(raw))
    if transform == "log1p":
        return _normalization(feature, statistics, prefix)(Log1p(name=f"{name}_log1p")(raw))
    raise ValueError(f"feature {name!r}: unknown transform {transform!r}")


def encode_features(
    features: Sequence[Feature], inputs: Mapping[str, keras.KerasTensor], workdir: Workdir, statistics: Statistics,
    name: str, prefix: str = "",
):
    """Encodes and concatenates ``features`` into one tensor of shape ``(batch, total_width)``."""
    blocks = [encode_feature(f, inputs[f.name], workdir, statistics, prefix) for f in features]
    if len(blocks) == 1:
        return blocks[0]
    return keras.layers.Concatenate(name=f"{prefix}{name}")(blocks)
