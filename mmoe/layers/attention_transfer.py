"""AITM's adaptive information transfer (Xi et al., KDD 2021) between two funnel steps."""

from __future__ import annotations

import math

import keras
from keras import ops

from mmoe.registry import register


@register
class AttentionTransfer(keras.layers.Layer):
    """Mixes what the earlier funnel step learned into the later step's representation.

    The earlier step's representation passes through a one-layer ReLU ``info`` network to the
    later one's width ``d``; the two vectors ``u`` (the transferred ``p`` and the later step's
    own ``q``) are weighted by a softmax over ``<Q(u), K(u)> / sqrt(d)`` and their projections
    ``V(u)`` summed (``Q``, ``K``, ``V``: linear maps without bias). The result replaces ``q``
    as the later step's tower input.

    Args:
        kernel_initializer: initializer of every kernel. Defaults to ``"glorot_uniform"``.

    Input shape:
        a list ``[previous, current]``: ``(batch_size, d_previous)`` and ``(batch_size, d)``.

    Output shape:
        ``(batch_size, d)``.
    """

    def __init__(self, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        previous, current = (tuple(shape) for shape in input_shape)
        width = int(current[-1])
        self.width = width
        self.info = keras.layers.Dense(width, activation="relu", kernel_initializer=self.kernel_initializer, name="info")
        self.info.build(previous)
        self.projections = [
            keras.layers.Dense(width, use_bias=False, kernel_initializer=self.kernel_initializer, name=name)
            for name in ("query", "key", "value")
        ]
        for layer in self.projections:
            layer.build(current)

    def call(self, inputs):
        previous, current = inputs
        transferred = self.info(previous)  # (batch, d)
        both = ops.stack([transferred, current], axis=1)  # (batch, 2, d)
        query, key, value = (layer(both) for layer in self.projections)  # (batch, 2, d) each
        weights = ops.softmax(ops.sum(query * key, axis=-1) / math.sqrt(self.width), axis=-1)  # (batch, 2)
        return ops.sum(weights[:, :, None] * value, axis=1)  # (batch, d)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        return {**super().get_config(), "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
