"""An embedding table pooled over the elements of a list feature, padding masked out."""

import keras
from keras import ops

from feature_specs.spec import EMBEDDING_L2_PER, POOLED_LIST_POOLINGS as POOLINGS
from mmoe.registry import register

PER_LOOKUP, PER_ROW = EMBEDDING_L2_PER  # what an embedding L2 penalty counts: every use, or each distinct row


def looked_up_rows_l2(rows, l2: float, indices=None, num_rows: int | None = None):
    """``l2 * sum(rows ** 2) / batch``: the L2 penalty of the embedding rows a batch looked up.

    Args:
        rows: ``(batch, ..., dim)`` the looked-up vectors (masked ones zeroed).
        l2: float >= 0.
        indices: ``(batch, ...)`` the rows' table indices, or None (every use of a row counts).
            Given, each distinct row counts once: a use of a row looked up k times in the batch
            weighs ``1/k`` (``model.embedding_l2_per: row``).
        num_rows: int. Rows of the table; needed with ``indices``.
    """
    squares = ops.sum(ops.square(rows), axis=-1)  # (batch, ...)
    if indices is not None:
        flat = ops.reshape(ops.cast(indices, "int32"), (-1,))
        uses = ops.segment_sum(ops.ones_like(flat, dtype=squares.dtype), flat, num_segments=num_rows)  # (num_rows,)
        squares = squares / ops.reshape(ops.take(uses, flat, axis=0), ops.shape(squares))
    return l2 * ops.sum(squares) / ops.cast(ops.shape(rows)[0], rows.dtype)


def rows_l2_loss(rows, indices, num_rows: int, l2: float, per: str):
    """:func:`looked_up_rows_l2` of ``rows``, counted as ``per`` says (``lookup`` or ``row``).

    Args:
        rows: ``(batch, ..., dim)`` the looked-up vectors (masked ones zeroed).
        indices: ``(batch, ...)`` their table indices (read with ``per="row"`` only).
        num_rows: int. Rows of the table.
        l2: float >= 0.
        per: str. One of ``EMBEDDING_L2_PER``.
    """
    return looked_up_rows_l2(rows, l2, indices if per == PER_ROW else None, num_rows)


def check_rows_l2(l2: float, per: str) -> tuple[float, str]:
    """``(l2, per)`` checked: ``l2 >= 0`` and ``per`` in ``EMBEDDING_L2_PER``.

    Raises:
        ValueError: naming the argument.
    """
    if l2 < 0:
        raise ValueError(f"`rows_l2` must be >= 0, got {l2!r}")
    if per not in EMBEDDING_L2_PER:
        raise ValueError(f"`rows_l2_per` must be one of {', '.join(EMBEDDING_L2_PER)}, got {per!r}")
    return float(l2), per


@register
class LookedUpRowsL2(keras.layers.Layer):
    """Passes looked-up embedding rows through and, in training only, adds their
    :func:`looked_up_rows_l2` as a loss (a Keras activity regularizer would also add it in the
    exported serving graph, where it cannot be read).

    Args:
        l2: float >= 0.
        num_rows: int. Rows of the table the rows come from.
        per: str. ``lookup`` (every use counts) or ``row`` (each distinct row once). Defaults to
            ``"lookup"``.

    Input: ``[indices, rows]``: indices ``(batch, ...)`` integers in ``[0, num_rows)``, rows
    ``(batch, ..., dim)``. Output: ``rows``.
    """

    def __init__(self, l2: float, num_rows: int, per: str = PER_LOOKUP, **kwargs):
        super().__init__(**kwargs)
        self.l2, self.per = check_rows_l2(l2, per)
        self.num_rows = int(num_rows)

    def call(self, inputs, training=None):
        indices, rows = inputs
        if training and self.l2:
            self.add_loss(rows_l2_loss(rows, indices, self.num_rows, self.l2, self.per))
        return rows

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "l2": self.l2, "num_rows": self.num_rows, "per": self.per}


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
        rows_l2_per: str. ``lookup`` (every element counts) or ``row`` (each distinct row once
            per batch). Defaults to ``"lookup"``.

    Input shape: ``(batch_size, max_length)`` integer indices in ``[0, input_dim)``.
    Output shape: ``(batch_size, output_dim)`` float32.
    """

    def __init__(self, input_dim: int, output_dim: int, pooling: str = "mean",
                 embeddings_initializer="uniform", rows_l2: float = 0.0, rows_l2_per: str = PER_LOOKUP, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(input_dim, int) or input_dim < 2:
            raise ValueError(f"`input_dim` must be an int >= 2 (padding and one element), got {input_dim!r}")
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(f"`output_dim` must be a positive int, got {output_dim!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.rows_l2, self.rows_l2_per = check_rows_l2(rows_l2, rows_l2_per)
        self.input_dim, self.output_dim, self.pooling = input_dim, output_dim, pooling
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
            self.add_loss(rows_l2_loss(vectors, indices, self.input_dim, self.rows_l2, self.rows_l2_per))
        pooled = ops.sum(vectors, axis=1)  # (batch, output_dim)
        if self.pooling == "mean":
            count = ops.sum(present, axis=1, keepdims=True)  # (batch, 1)
            pooled = pooled / ops.maximum(count, 1.0)
        return pooled

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "pooling": self.pooling, "rows_l2": self.rows_l2, "rows_l2_per": self.rows_l2_per,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}
