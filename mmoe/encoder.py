"""Input encoder: Keras preprocessing layers built from the spec and the pipeline's artifacts.

Each raw feature becomes a dense block inside the model, so the exported SavedModel takes raw
values and carries its vocabularies (as assets) and statistics (as constants). Every transform
has two halves: :func:`preprocess_feature` (lookup, hashing, bucketizing, normalizing: no
trainable weights, and not XLA-compilable) and :func:`embed_feature` (the embedding table).
Training runs the first half in tf.data and the second in the compiled train step; the serving
model chains both.

============  =====================================================  ===========================
transform     layers                                                  output
============  =====================================================  ===========================
vocabulary    StringLookup / IntegerLookup (vocabulary file) + Embedding  ``(batch, embedding_dim)``
hashing       Hashing(num_bins) + Embedding                            ``(batch, embedding_dim)``
quantile      Discretization(train-split boundaries) + Embedding       ``(batch, embedding_dim)``
zscore        Normalization(mean, variance)                            ``(batch, 1)``
log1p         Log1p + Normalization(mean, variance of log1p)           ``(batch, 1)``
============  =====================================================  ===========================

A list feature (``list:`` in the spec) arrives padded, ``(batch, max_length)``, and takes
``vocabulary`` (the lookup with the padding element as its mask token: index 0, OOV next) or
``hashing`` (padding hashed to bin 0), then :class:`~mmoe.layers.pooled_embedding.PooledEmbedding`:
the elements' embeddings pooled (``list.pooling``: mean or sum) with the padding masked out,
``(batch, embedding_dim)``; ``pooling: attention`` weighs the elements against the ``list.target``
feature's embedding instead (:class:`~mmoe.layers.target_attention.TargetAttentionEmbedding`, DIN).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
import tensorflow as tf

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec import LIST_PADDING, Feature
from feature_specs.tensors import input_width
from mmoe.layers import CastToFloat, Log1p
from mmoe.layers.oov_dropout import OOVDropout
from mmoe.layers.pooled_embedding import PER_LOOKUP, LookedUpRowsL2, PooledEmbedding
from mmoe.layers.target_attention import TargetAttentionEmbedding


def load_statistics(workdir: Workdir) -> Statistics:
    """Reads ``artifacts/statistics.json`` (any tf.io.gfile path)."""
    if not tf.io.gfile.exists(workdir.statistics_json):
        raise FileNotFoundError(
            f"{workdir.statistics_json} is missing: run `mmoe preprocess --workdir {workdir.root}` first"
        )
    with tf.io.gfile.GFile(workdir.statistics_json, "r") as handle:
        return Statistics.from_json(handle.read())


def _normalization(feature: Feature, statistics: Statistics) -> keras.layers.Normalization:
    stats = statistics.numeric.get(feature.name)
    if stats is None:
        raise KeyError(f"statistics.json has no numeric statistics for feature {feature.name!r}")
    return keras.layers.Normalization(
        mean=stats.mean, variance=max(stats.variance, 1e-12), name=f"{feature.name}_normalize"
    )


def embedding_input_dim(feature: Feature, statistics: Statistics) -> int:
    """Rows of ``feature``'s embedding table: vocabulary + OOV, hash bins or quantile buckets
    (for a list feature's vocabulary, one more: the padding row 0)."""
    if feature.transform == "vocabulary":
        size = statistics.vocabulary_sizes.get(feature.name, 0)
        if size == 0:
            raise ValueError(
                f"feature {feature.name!r}: its vocabulary is empty (no value reached min_count "
                f"{feature.min_count} in the train split)"
            )
        return size + feature.num_oov + (1 if feature.is_list else 0)
    if feature.transform == "hashing":
        return feature.num_bins
    if feature.transform == "quantile":
        boundaries = statistics.quantiles.get(feature.name)
        if boundaries is None:
            raise KeyError(f"statistics.json has no quantile boundaries for feature {feature.name!r}")
        return len(boundaries) + 1
    raise ValueError(f"feature {feature.name!r}: transform {feature.transform!r} has no embedding")


def preprocess_feature(feature: Feature, raw, workdir: Workdir, statistics: Statistics):
    """The stateless, non-trainable half of ``feature``'s transform, on its raw ``(batch, 1)`` input.

    Lookups, hashing and bucketizing (which XLA cannot compile) live here, so training can run
    them in the tf.data pipeline and the trainable half in a jit-compiled step.

    Returns:
        ``(batch, 1)`` integer indices for categorical transforms (int64 for vocabulary and
        hashing, int32 for quantile) or ``(batch, 1)`` float32 normalized values for numeric ones (zscore, log1p);
        ``(batch, max_length)`` int64 indices for a list feature, 0 where the list is padded.
    """
    name, transform = feature.name, feature.transform
    mask = LIST_PADDING[feature.dtype] if feature.is_list else None  # the padding element -> index 0
    if transform == "vocabulary":
        embedding_input_dim(feature, statistics)  # fails early, naming the feature, on an empty vocabulary
        extra = {}
        lookup_cls = keras.layers.StringLookup if feature.dtype == "string" else keras.layers.IntegerLookup
        if lookup_cls is keras.layers.IntegerLookup and mask is not None:
            extra["oov_token"] = mask - 1  # IntegerLookup's default OOV token (-1) is the padding element
        return lookup_cls(
            vocabulary=workdir.vocabulary_file(name),
            num_oov_indices=feature.num_oov,
            mask_token=mask,
            name=f"{name}_lookup",
            **extra,
        )(raw)
    if transform == "hashing":
        return keras.layers.Hashing(num_bins=feature.num_bins, mask_value=mask, name=f"{name}_hash")(raw)
    if transform == "quantile":
        embedding_input_dim(feature, statistics)
        return keras.layers.Discretization(
            bin_boundaries=list(statistics.quantiles[name]), output_mode="int", name=f"{name}_bucketize"
        )(CastToFloat(name=f"{name}_float")(raw))
    if transform == "zscore":
        return _normalization(feature, statistics)(CastToFloat(name=f"{name}_float")(raw))
    if transform == "log1p":
        return _normalization(feature, statistics)(Log1p(name=f"{name}_log1p")(raw))
    raise ValueError(f"feature {name!r}: unknown transform {transform!r}")


def preprocessed_dtype(feature: Feature) -> str:
    """dtype of :func:`preprocess_feature`'s output for ``feature`` (Discretization gives int32)."""
    if feature.transform == "quantile":
        return "int32"
    return "int64" if feature.is_categorical else "float32"


def preprocessed_inputs(features: Sequence[Feature]) -> dict[str, keras.KerasTensor]:
    """Keras inputs for preprocessed features: ``(batch, 1)`` each (``(batch, max_length)`` for a
    list feature), named like the feature."""
    return {f.name: keras.Input(shape=(input_width(f),), dtype=preprocessed_dtype(f), name=f.name) for f in features}


def embed_feature(feature: Feature, preprocessed, statistics: Statistics, prefix: str = "", rows_l2: float = 0.0,
                  rows_l2_per: str = PER_LOOKUP):
    """The trainable half: indices -> ``(batch, embedding_dim)``; numeric values pass through.

    Layer names start with ``prefix``, so independent towers (single-task models) can each have
    their own embeddings. ``rows_l2`` (``model.embedding_l2``) adds the L2 penalty of the rows
    looked up (:func:`mmoe.layers.pooled_embedding.looked_up_rows_l2`) as a loss, counted as
    ``rows_l2_per`` (``model.embedding_l2_per``) says. A feature with ``oov_dropout`` looks up
    that share of its training rows as OOV (:class:`~mmoe.layers.oov_dropout.OOVDropout`).
    """
    if not feature.is_categorical:
        return preprocessed
    rows = embedding_input_dim(feature, statistics)
    if feature.is_list:
        return PooledEmbedding(rows, feature.embedding_dim, pooling=feature.list.pooling, rows_l2=rows_l2,
                               rows_l2_per=rows_l2_per, name=f"{prefix}{feature.name}_embedding")(preprocessed)
    if feature.oov_dropout:
        preprocessed = OOVDropout(feature.oov_dropout, feature.num_oov,
                                  name=f"{prefix}{feature.name}_oov_dropout")(preprocessed)
    x = keras.layers.Embedding(rows, feature.embedding_dim, name=f"{prefix}{feature.name}_embedding")(preprocessed)
    if rows_l2:
        x = LookedUpRowsL2(rows_l2, rows, rows_l2_per, name=f"{prefix}{feature.name}_rows_l2")([preprocessed, x])
    return keras.layers.Reshape((feature.embedding_dim,), name=f"{prefix}{feature.name}_flat")(x)


def preprocess_features(
    features: Sequence[Feature], raw_inputs: Mapping[str, keras.KerasTensor], workdir: Workdir, statistics: Statistics
) -> dict[str, keras.KerasTensor]:
    """:func:`preprocess_feature` for each of ``features``: name -> ``(batch, 1)`` tensor."""
    return {f.name: preprocess_feature(f, raw_inputs[f.name], workdir, statistics) for f in features}


def _attends(feature: Feature) -> bool:
    return feature.list is not None and feature.list.pooling == "attention"


def embed_features(
    features: Sequence[Feature], preprocessed: Mapping[str, keras.KerasTensor], statistics: Statistics,
    name: str, prefix: str = "", rows_l2: float = 0.0, rows_l2_per: str = PER_LOOKUP,
):
    """Embeds and concatenates ``features`` into one tensor of shape ``(batch, total_width)``.

    ``rows_l2``, ``rows_l2_per``: see :func:`embed_feature`.

    A list feature with ``pooling: attention`` is pooled by
    :class:`~mmoe.layers.target_attention.TargetAttentionEmbedding` against its ``target``'s
    embedding (a feature among ``features``), so it is embedded after the others.
    """
    embedded = {f.name: embed_feature(f, preprocessed[f.name], statistics, prefix, rows_l2, rows_l2_per)
                for f in features if not _attends(f)}
    for f in filter(_attends, features):
        embedded[f.name] = TargetAttentionEmbedding(
            embedding_input_dim(f, statistics), f.embedding_dim, rows_l2=rows_l2, rows_l2_per=rows_l2_per,
            name=f"{prefix}{f.name}_embedding",
        )([preprocessed[f.name], embedded[f.list.target]])
    blocks = [embedded[f.name] for f in features]
    if len(blocks) == 1:
        return blocks[0]
    return keras.layers.Concatenate(name=f"{prefix}{name}")(blocks)
