"""DSelect-k: a differentiable gate that selects k experts (Hazimeh et al., NeurIPS 2021)."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from mmoe.registry import register

_EPSILON = 1e-12


def smooth_step(t, gamma: float):
    """The cubic smooth-step: 0 below ``-gamma/2``, 1 above ``gamma/2``, ``-2t³/γ³ + 3t/(2γ) + 1/2``
    between (continuously differentiable; its gradient is exactly 0 once saturated)."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return ops.where(t <= -gamma / 2, ops.zeros_like(t), ops.where(t >= gamma / 2, ops.ones_like(t), cubic))


def binary_codes(num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bits, fold)``: the ``(2^m, m)`` 0/1 codes of ``m = ceil(log2 E)`` bits, and the ``(2^m, E)``
    0/1 map of code ``c`` to expert ``c mod E`` (codes past E fold back onto the first experts, so a
    selector's distribution over experts sums to 1 and stays one-hot once it has saturated)."""
    bits_per_code = max(1, math.ceil(math.log2(num_experts)))
    codes = np.arange(2**bits_per_code)
    bits = ((codes[:, None] >> np.arange(bits_per_code)[None, :]) & 1).astype("float32")
    fold = np.eye(num_experts, dtype="float32")[codes % num_experts]
    return bits, fold


@register
class DSelectKGate(keras.layers.Layer):
    """Per-example DSelect-k gate: k selectors, each a smooth-step binary code over the experts.

    Selector ``i`` computes ``z_i = W_i x + b_i`` (``m = ceil(log2 E)`` numbers) and puts weight
    ``prod_j (S(z_ij) if bit j of e else 1 - S(z_ij))`` on expert ``e``, with ``S`` the
    smooth-step of width ``gamma``; the k selectors are mixed by ``softmax(A x + a)``. When every
    ``z_ij`` is outside ``(-gamma/2, gamma/2)`` each selector is one-hot, so at most k experts have
    weight: the selection is hard, and sparse dispatch computes exactly the same mixture. In
    training, ``entropy_weight`` times the mean entropy of each selector's distribution is added
    to the layer's losses, which drives the selectors to that hard state.

    Args:
        num_experts: int. Number of experts E.
        k: int in [1, E]. Number of selectors (at most k experts chosen per example).
        gamma: float > 0. Width of the smooth-step's non-constant part. Defaults to 1.0.
        entropy_weight: float >= 0. Weight of the selectors' entropy in the losses. Defaults to 0.
        hidden_units: list of int. Hidden ReLU layers before the selectors. Defaults to none.
        kernel_initializer: initializer of the selector kernels. Defaults to ``"glorot_uniform"``.
        seed: int. Seed of the codes' initial offsets (uniform in ``(-gamma/2, gamma/2)``).

    Input shape:
        ``(batch_size, input_dim)``.

    Output shape:
        ``(batch_size, num_experts)``, each row non-negative and summing to 1.
    """

    def __init__(
        self,
        num_experts: int,
        k: int,
        gamma: float = 1.0,
        entropy_weight: float = 0.0,
        hidden_units: Sequence[int] = (),
        kernel_initializer="glorot_uniform",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"`num_experts` must be >= 1, got {num_experts!r}")
        if not 1 <= int(k) <= int(num_experts):
            raise ValueError(f"`k` must be in [1, num_experts={num_experts}], got {k!r}")
        if not gamma > 0:
            raise ValueError(f"`gamma` must be > 0, got {gamma!r}")
        if entropy_weight < 0:
            raise ValueError(f"`entropy_weight` must be >= 0, got {entropy_weight!r}")
        self.num_experts = int(num_experts)
        self.k = int(k)
        self.gamma = float(gamma)
        self.entropy_weight = float(entropy_weight)
        self.hidden_units = [int(u) for u in hidden_units]
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        bits, fold = binary_codes(self.num_experts)
        self.num_bits = bits.shape[1]
        self._bits, self._fold = bits, fold
        self.hidden_layers = [
            keras.layers.Dense(u, activation="relu", name=f"hidden_{i}") for i, u in enumerate(self.hidden_units)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        width = int(shape[-1])
        self.code_kernel = self.add_weight(
            name="code_kernel", shape=(width, self.k * self.num_bits), initializer=self.kernel_initializer
        )
        self.code_bias = self.add_weight(
            name="code_bias", shape=(self.k * self.num_bits,),
            initializer=keras.initializers.RandomUniform(-self.gamma / 2, self.gamma / 2, seed=self.seed),
        )
        self.selector_kernel = self.add_weight(
            name="selector_kernel", shape=(width, self.k), initializer=self.kernel_initializer
        )
        self.selector_bias = self.add_weight(name="selector_bias", shape=(self.k,), initializer="zeros")

    def selectors(self, inputs):
        """``(selections (batch, k, E), selector weights (batch, k))``: each selector's distribution
        over the experts and the softmax that mixes them."""
        x = inputs
        for layer in self.hidden_layers:
            x = layer(x)
        codes = ops.reshape(ops.matmul(x, self.code_kernel) + self.code_bias, (-1, self.k, 1, self.num_bits))
        on = smooth_step(codes, self.gamma)  # (batch, k, 1, m)
        bits = ops.convert_to_tensor(self._bits, dtype=on.dtype)  # (2^m, m)
        per_code = ops.prod(bits * on + (1.0 - bits) * (1.0 - on), axis=-1)  # (batch, k, 2^m)
        selections = ops.matmul(per_code, ops.convert_to_tensor(self._fold, dtype=on.dtype))  # (batch, k, E)
        mixing = ops.softmax(ops.matmul(x, self.selector_kernel) + self.selector_bias, axis=-1)  # (batch, k)
        return selections, mixing

    def call(self, inputs, training=None):
        selections, mixing = self.selectors(inputs)
        if training and self.entropy_weight > 0:
            entropy = -ops.sum(selections * ops.log(selections + _EPSILON), axis=-1)  # (batch, k)
            self.add_loss(self.entropy_weight * ops.mean(ops.sum(entropy, axis=-1)))
        return ops.sum(ops.expand_dims(mixing, -1) * selections, axis=1)  # (batch, E)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_weight": self.entropy_weight,
            "hidden_units": self.hidden_units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "seed": self.seed,
        }


def hard_selection(weights, k: int):
    """The k largest of each row of ``weights`` ``(batch, E)``, renormalized, the rest 0: what a
    DSelect-k gate's weights are exactly once its selectors are hard (then at most k are nonzero)."""
    values, experts = ops.top_k(weights, k)
    values = values / ops.maximum(ops.sum(values, axis=-1, keepdims=True), _EPSILON)
    return ops.sum(ops.one_hot(experts, ops.shape(weights)[-1], dtype=weights.dtype) * ops.expand_dims(values, -1), axis=1)
