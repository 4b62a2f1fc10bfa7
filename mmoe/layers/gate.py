"""A softmax gate: how much of each expert one task takes, per example."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from mmoe.registry import register

_MASKED = -1e9  # a logit that softmax turns into an exact 0 without producing NaN


@register
class SoftmaxGate(keras.layers.Layer):
    """Optional MLP, a linear map to one logit per expert, then a softmax with temperature.

    Args:
        num_experts: int. Number of experts E.
        temperature: float. Softmax temperature; above 1 flattens the weights, below 1
            sharpens them. Defaults to 1.0.
        hidden_units: list of int. Hidden ReLU layers before the expert logits. Defaults to none
            (a linear gate, as in the MMoE paper).
        top_k: int. If in (0, E), only the k largest logits of each example keep weight (sparse
            gating; ties at the k-th logit keep theirs too). 0 keeps all. Defaults to 0.
        expert_dropout: float. In training only, each expert is dropped from each example's
            mixture with this probability and the rest renormalized; the top expert is never
            dropped, so weights always sum to 1. Defaults to 0.
        kernel_initializer: initializer of the ``[input_dim, E]`` kernel. Defaults to
            ``"glorot_uniform"``.
        seed: int. Seed of the expert-dropout noise.

    Input shape:
        ``(batch_size, input_dim)``.

    Output shape:
        ``(batch_size, num_experts)``, each row non-negative and summing to 1.
    """

    def __init__(
        self,
        num_experts: int,
        temperature: float = 1.0,
        hidden_units: Sequence[int] = (),
        top_k: int = 0,
        expert_dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"`num_experts` must be >= 1, got {num_experts!r}")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature!r}")
        if not 0 <= int(top_k) <= int(num_experts):
            raise ValueError(f"`top_k` must be in [0, num_experts={num_experts}], got {top_k!r}")
        if not 0.0 <= expert_dropout < 1.0:
            raise ValueError(f"`expert_dropout` must be in [0, 1), got {expert_dropout!r}")
        self.num_experts = int(num_experts)
        self.temperature = float(temperature)
        self.hidden_units = [int(u) for u in hidden_units]
        self.top_k = int(top_k)
        self.expert_dropout = float(expert_dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        self.hidden_layers = [
            keras.layers.Dense(u, activation="relu", name=f"hidden_{i}") for i, u in enumerate(self.hidden_units)
        ]
        self.seed_generator = keras.random.SeedGenerator(seed) if self.expert_dropout > 0 else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        self.kernel = self.add_weight(
            name="kernel", shape=(int(shape[-1]), self.num_experts), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_experts,), initializer="zeros")

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.hidden_layers:
            x = layer(x)
        logits = (ops.matmul(x, self.kernel) + self.bias) / self.temperature  # (batch, E)
        if 0 < self.top_k < self.num_experts:
            kth_largest = ops.top_k(logits, self.top_k)[0][:, -1:]  # (batch, 1)
            logits = ops.where(logits >= kth_largest, logits, _MASKED)
        if training and self.expert_dropout > 0:
            noise = keras.random.uniform(ops.shape(logits), seed=self.seed_generator)
            is_top = logits >= ops.max(logits, axis=-1, keepdims=True)
            keep = ops.logical_or(noise >= self.expert_dropout, is_top)
            logits = ops.where(keep, logits, _MASKED)
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "temperature": self.temperature,
            "hidden_units": self.hidden_units,
            "top_k": self.top_k,
            "expert_dropout": self.expert_dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "seed": self.seed,
        }


def load_balance_loss(gate_weights):
    """``E * sum_e mean_batch(g_e)^2``: 1 when experts are used equally, E when one takes all.

    Args:
        gate_weights: ``(batch, E)`` or ``(batch, tasks, E)`` softmax outputs.
    """
    weights = ops.reshape(gate_weights, (-1, ops.shape(gate_weights)[-1]))
    importance = ops.mean(weights, axis=0)  # (E,)
    return ops.cast(ops.shape(weights)[-1], importance.dtype) * ops.sum(importance**2)
