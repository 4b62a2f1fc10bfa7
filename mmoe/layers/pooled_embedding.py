"""An embedding table pooled over the elements of a list feature, padding masked out."""

import keras
from keras import ops

from feature_specs.spec import POOLED_LIST_POOLINGS as POOLINGS
from mmoe.registry import register


def looked_up_rows_l2(rows, l2: float):
    """``l2 * sum(rows ** 2) / batch``: the L2 penalty of the embedding rows a batch looked up.

    Args:
        rows: ``(batch, ..., dim)`` the looked-up vectors (masked ones zeroed).
        l2: float >= 0.
    """
    return l2 * ops.sum(ops.square(rows)) / ops.cast(ops.shape(rows)[0], rows.dtype)


@register
class LookedUpRowsL2(keras.layers.Layer):
    """Passes looked-up embedding rows through and, in training only, adds their
    :func:`looked_up_rows_l2` as a loss (a Keras activity regularizer would also add it in the
    exported serving graph, where it cannot be read).

    Args:
        l2: float >= 0.

    Input and output shape: ``(batch, ..., dim)``.
    """

    def __init__(self, l2: float, **kwargs):
        super().__init__(**kwargs)
        if l2 < 0:
            raise ValueError(f"`l2` must be >= 0, got {l2!r}")
        self.l2 = float(l2)

    def call(self, rows, training=None):
        if training and self.l2:
            self.add_loss(looked_up_rows_l2(rows, self.l2))
        return rows

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@register
class PooledEmbedding(keras.layers.Layer):
    """Embeds each element of a padded list of indices and pools them into one vector.

    Index 0 is padding (what ``StringLookup``/``IntegerLookup`` with a ``mask_token`` and
    ``Hashing`` with a ``mask_value`` give the padding element): it is masked out of the pool, so
    it neither adds to a row's vector nor receives a gradient. A row without elements pools to
    zeros under both poolings.

    Args:
        input_dim: int. Rows of the table, the padding row 0 included.
        output_dim: int. Embedding width.
        pooling: str. ``mean`` (the average of the row's element vectors) or ``sum``. Defaults
            to ``"mean"``.
        embeddings_initializer: initializer of the table. Defaults to ``"uniform"``, as
            ``keras.layers.Embedding``.
        rows_l2: float >= 0. Adds :func:`looked_up_rows_l2` of the elements' vectors as a loss.
            Defaults to 0 (none).

    Input shape: ``(batch_size, max_length)`` integer indices in ``[0, input_dim)``.
    Output shape: ``(batch_size, output_dim)`` float32.
    """

    def __init__(self, input_dim: int, output_dim: int, pooling: str = "mean",
                 embeddings_initializer="uniform", rows_l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(input_dim, int) or input_dim < 2:
            raise ValueError(f"`input_dim` must be an int >= 2 (padding and one element), got {input_dim!r}")
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(f"`output_dim` must be a positive int, got {output_dim!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if rows_l2 < 0:
            raise ValueError(f"`rows_l2` must be >= 0, got {rows_l2!r}")
        self.input_dim, self.output_dim, self.pooling, self.rows_l2 = input_dim, output_dim, pooling, float(rows_l2)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.input_dim, self.output_dim),
                                          initializer=self.embeddings_initializer)

    def call(self, indices, training=None):
        indices = ops.cast(indices, "int32")
        vectors = ops.take(self.embeddings, indices, axis=0)  # (batch, max_length, output_dim)
        present = ops.cast(ops.not_equal(indices, 0), vectors.dtype)  # (batch, max_length)
        vectors = vectors * ops.expand_dims(present, -1)
        if training and self.rows_l2:
            self.add_loss(looked_up_rows_l2(vectors, self.rows_l2))
        pooled = ops.sum(vectors, axis=1)  # (batch, output_dim)
        if self.pooling == "mean":
            count = ops.sum(present, axis=1, keepdims=True)  # (batch, 1)
            pooled = pooled / ops.maximum(count, 1.0)
        return pooled

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "pooling": self.pooling, "rows_l2": self.rows_l2,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}
