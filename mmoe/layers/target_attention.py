"""An embedded list pooled by attention to a target: Deep Interest Network's activation unit.

Zhou et al., "Deep Interest Network for Click-Through Rate Prediction" (KDD 2018): a user's
behaviour history is not averaged but weighed against the candidate, so the elements that bear
on this candidate count most. For elements ``e_j`` and the query ``q`` (the candidate's
embedding, projected to the elements' width)::

    w_j = MLP([e_j, q, e_j - q, e_j * q])        # one scalar per element
    out = sum_j present_j * w_j * e_j

As in the paper, the weights are not normalized by a softmax, so the output keeps how strongly
the history bears on the candidate (many relevant elements give a larger vector). The last
bias starts at 1, so an untrained layer is sum pooling and no element starts without gradient.
"""

import keras
from keras import ops

from mmoe.layers.pooled_embedding import PER_LOOKUP, check_rows_l2, rows_l2_loss
from mmoe.registry import register


@register
class TargetAttentionEmbedding(keras.layers.Layer):
    """Embeds a padded list of indices and pools it with weights from attention to a query.

    Index 0 is padding (as in :class:`~mmoe.layers.pooled_embedding.PooledEmbedding`): masked out
    of the pool, it gets no gradient. A row without elements pools to zeros.

    Args:
        input_dim: int. Rows of the table, the padding row 0 included.
        output_dim: int. Embedding width.
        units: sequence of int. Hidden widths of the activation MLP (ReLU). Defaults to ``(16,)``.
        embeddings_initializer: initializer of the table. Defaults to ``"uniform"``.
        rows_l2: float >= 0. Adds :func:`~mmoe.layers.pooled_embedding.looked_up_rows_l2` of the
            elements' vectors as a loss (:func:`~mmoe.layers.pooled_embedding.rows_l2_loss`).
            Defaults to 0 (none).
        rows_l2_per: str. ``lookup`` (every element counts) or ``row`` (each distinct row once
            per batch). Defaults to ``"lookup"``.

    Input: ``[indices, query]``: indices ``(batch_size, max_length)`` integers in
    ``[0, input_dim)``, query ``(batch_size, query_dim)`` float (the target feature's embedding).
    Output shape: ``(batch_size, output_dim)`` float32.
    """

    def __init__(self, input_dim: int, output_dim: int, units=(16,), embeddings_initializer="uniform",
                 rows_l2: float = 0.0, rows_l2_per: str = PER_LOOKUP, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(input_dim, int) or input_dim < 2:
            raise ValueError(f"`input_dim` must be an int >= 2 (padding and one element), got {input_dim!r}")
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(f"`output_dim` must be a positive int, got {output_dim!r}")
        units = tuple(units)
        if not units or not all(isinstance(u, int) and u > 0 for u in units):
            raise ValueError(f"`units` must be one or more positive ints, got {units!r}")
        self.rows_l2, self.rows_l2_per = check_rows_l2(rows_l2, rows_l2_per)
        self.input_dim, self.output_dim, self.units = input_dim, output_dim, units
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        _, query_shape = input_shape
        self.embeddings = self.add_weight(name="embeddings", shape=(self.input_dim, self.output_dim),
                                          initializer=self.embeddings_initializer)
        self.query_kernel = self.add_weight(name="query_kernel", shape=(query_shape[-1], self.output_dim),
                                            initializer="glorot_uniform")
        self.hidden = []
        width = 4 * self.output_dim
        for index, units in enumerate(self.units + (1,)):
            last = index == len(self.units)
            kernel = self.add_weight(name=f"kernel_{index}", shape=(width, units), initializer="glorot_uniform")
            # the weights start near 1: the layer starts as sum pooling and learns to weigh from there
            bias = self.add_weight(name=f"bias_{index}", shape=(units,), initializer="ones" if last else "zeros")
            self.hidden.append((kernel, bias))
            width = units

    def call(self, inputs, training=None):
        indices, query = inputs
        indices = ops.cast(indices, "int32")
        vectors = ops.take(self.embeddings, indices, axis=0)  # (batch, max_length, output_dim)
        present = ops.cast(ops.not_equal(indices, 0), vectors.dtype)  # (batch, max_length)
        if training and self.rows_l2:
            self.add_loss(rows_l2_loss(vectors * ops.expand_dims(present, -1), indices, self.input_dim, self.rows_l2,
                                       self.rows_l2_per))
        target = ops.expand_dims(ops.matmul(ops.cast(query, vectors.dtype), self.query_kernel), 1)  # (batch, 1, d)
        target = ops.broadcast_to(target, ops.shape(vectors))
        x = ops.concatenate([vectors, target, vectors - target, vectors * target], axis=-1)  # (batch, L, 4d)
        for index, (kernel, bias) in enumerate(self.hidden):
            x = ops.matmul(x, kernel) + bias
            if index < len(self.hidden) - 1:
                x = ops.relu(x)
        weights = ops.squeeze(x, -1) * present  # (batch, max_length)
        return ops.sum(vectors * ops.expand_dims(weights, -1), axis=1)  # (batch, output_dim)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "units": list(self.units), "rows_l2": self.rows_l2, "rows_l2_per": self.rows_l2_per,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}
