"""A softmax gate: how much of each expert one task takes, per example."""

from __future__ import annotations

import keras
from keras import ops

from mmoe.registry import register


@register
class SoftmaxGate(keras.layers.Layer):
    """Linear map to one logit per expert, then a softmax with temperature.

    Args:
        num_experts: int. Number of experts E.
        temperature: float. Softmax temperature; above 1 flattens the weights, below 1
            sharpens them. Defaults to 1.0.
        kernel_initializer: initializer of the ``[input_dim, E]`` kernel. Defaults to
            ``"glorot_uniform"``.

    Input shape:
        ``(batch_size, input_dim)``.

    Output shape:
        ``(batch_size, num_experts)``, each row non-negative and summing to 1.
    """

    def __init__(self, num_experts: int, temperature: float = 1.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"`num_experts` must be >= 1, got {num_experts!r}")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature!r}")
        self.num_experts = int(num_experts)
        self.temperature = float(temperature)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.num_experts), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_experts,), initializer="zeros")

    def call(self, inputs):
        logits = ops.matmul(inputs, self.kernel) + self.bias  # (batch, E)
        return ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "temperature": self.temperature,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
