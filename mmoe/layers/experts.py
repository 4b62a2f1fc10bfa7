"""Experts: E identical MLPs evaluated as one batched contraction."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from mmoe.registry import register


@register
class ExpertBank(keras.layers.Layer):
    """``num_experts`` MLP experts whose weights are stacked into ``[E, d_in, d_out]`` tensors.

    Each layer of every expert runs as a single ``einsum`` rather than a Python loop of Dense
    layers, so adding experts grows the matrix product, not the number of kernels launched.

    Args:
        num_experts: int. Number of experts E.
        units: list of int. Widths of each expert's layers.
        activation: str. Activation after every layer. Defaults to ``"relu"``.
        kernel_initializer: initializer for the stacked kernels. Defaults to Glorot uniform
            computed per expert (fans of ``[d_in, d_out]``, not of the stacked tensor).
        bias_initializer: initializer for the biases. Defaults to ``"zeros"``.

    Input shape:
        ``(batch_size, input_dim)``.

    Output shape:
        ``(batch_size, num_experts, units[-1])``.
    """

    def __init__(
        self,
        num_experts: int,
        units: Sequence[int],
        activation: str = "relu",
        kernel_initializer=None,
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"`num_experts` must be >= 1, got {num_experts!r}")
        units = [int(u) for u in units]
        if not units or any(u < 1 for u in units):
            raise ValueError(f"`units` must be a non-empty list of positive integers, got {units!r}")
        self.num_experts = int(num_experts)
        self.units = units
        self.activation = keras.activations.get(activation)
        if kernel_initializer is None:
            # Keras counts the leading E axis in the fans of a 3-D kernel; scale=E undoes that.
            kernel_initializer = keras.initializers.VarianceScaling(
                scale=float(self.num_experts), mode="fan_avg", distribution="uniform"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        self.kernels, self.biases = [], []
        for i, d_out in enumerate(self.units):
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{i}",
                    shape=(self.num_experts, d_in, d_out),
                    initializer=self.kernel_initializer,
                )
            )
            self.biases.append(
                self.add_weight(
                    name=f"bias_{i}", shape=(self.num_experts, d_out), initializer=self.bias_initializer
                )
            )
            d_in = d_out

    def call(self, inputs):
        # inputs: (batch, d_in) -> (batch, E, units[0])
        x = ops.einsum("bd,edu->beu", inputs, self.kernels[0]) + self.biases[0]
        x = self.activation(x)
        for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
            # (batch, E, d) x (E, d, u) -> (batch, E, u)
            x = self.activation(ops.einsum("bed,edu->beu", x, kernel) + bias)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts, self.units[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
