"""A stack of Dense layers: towers, the bias tower and small gate networks."""

from __future__ import annotations

from typing import Sequence

import keras

from mmoe.registry import register


@register
class MLP(keras.layers.Layer):
    """Dense layers with an activation between them and optional dropout.

    Args:
        units: list of int. Width of each Dense layer, in order.
        activation: str. Activation of every layer but the last. Defaults to ``"relu"``.
        output_activation: str or None. Activation of the last layer; ``None`` leaves it linear,
            ``"same"`` uses ``activation``. Defaults to ``"same"``.
        dropout: float. Dropout rate after each hidden layer, in training only. Defaults to 0.
        kernel_initializer: initializer of the Dense kernels. Defaults to ``"glorot_uniform"``.

    Input shape:
        ``(batch_size, input_dim)``.

    Output shape:
        ``(batch_size, units[-1])``.
    """

    def __init__(
        self,
        units: Sequence[int],
        activation: str = "relu",
        output_activation: str | None = "same",
        dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        units = [int(u) for u in units]
        if not units or any(u < 1 for u in units):
            raise ValueError(f"`units` must be a non-empty list of positive integers, got {units!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        self.units = units
        self.activation = activation
        self.output_activation = output_activation
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        last_activation = activation if output_activation == "same" else output_activation
        self.dense_layers = [
            keras.layers.Dense(
                u,
                activation=activation if i < len(units) - 1 else last_activation,
                kernel_initializer=self.kernel_initializer,
                name=f"dense_{i}",
            )
            for i, u in enumerate(units)
        ]
        self.dropout_layer = keras.layers.Dropout(dropout) if dropout > 0 else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, layer in enumerate(self.dense_layers):
            layer.build(shape)
            shape = shape[:-1] + (self.units[i],)

    def call(self, inputs, training=None):
        x = inputs
        for i, layer in enumerate(self.dense_layers):
            x = layer(x)
            if self.dropout_layer is not None and i < len(self.dense_layers) - 1:
                x = self.dropout_layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "output_activation": self.output_activation,
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
