"""Experts: E identical MLPs, fused into stacked kernels or, for comparison, a loop of Dense layers."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from mmoe.registry import register


@register
class ExpertBank(keras.layers.Layer):
    """``num_experts`` MLP experts, each ``units`` wide, applied to the same input.

    Fused (the default), layer ``i`` of every expert lives in one stacked kernel
    ``kernel_i`` of shape ``[E, d_in, d_out]`` and bias ``bias_i`` of shape ``[E, d_out]``, and
    the products take the form measured fastest on TensorFlow's CPU kernels (2 cores, batch
    512-1024, see ``benchmarks/train.py``):

    * one-layer experts: ONE matmul ``x @ K`` with ``K`` viewed as ``[d_in, E * d_out]``
      (2x faster than a loop of Dense layers at E=8, 60 -> 64);
    * deeper experts: E independent matmul chains on contiguous slices of the stacked kernels,
      which TensorFlow runs in parallel (1.0-1.1x one wide first-layer matmul followed by
      per-expert products at 132 -> 256 -> 128, which pays for splitting the wide activation
      and concatenating its gradient; 1.0x under XLA on an AVX-512 CPU).

    A batched ``einsum`` (``bd,edu->beu`` then ``bed,edu->beu``) computes the same function but
    TensorFlow lowers it to transposes around BatchMatMul; it was the slowest form measured.

    With ``fused=False`` the experts are a Python loop of ordinary ``Dense`` layers
    (``expert_{e}_dense_{i}``), the naive form that the fused one is benchmarked against. Both
    compute the same function; their weights differ only in layout (``kernel_i[e]`` is the
    kernel of ``expert_{e}_dense_{i}``), see :meth:`expert_weights`.

    Args:
        num_experts: int. Number of experts E.
        units: list of int. Widths of each expert's layers.
        activation: str. Activation after every layer. Defaults to ``"relu"``.
        kernel_initializer: initializer of each expert's ``[d_in, d_out]`` kernel. Defaults to
            Glorot uniform per expert (fans of ``[d_in, d_out]``, not of the stacked tensor).
        bias_initializer: initializer for the biases. Defaults to ``"zeros"``.
        fused: bool. Stacked kernels (True) or a loop of Dense layers (False). Defaults to True.

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
        fused: bool = True,
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
        # None means per-expert Glorot; kept as None so get_config round-trips it for both forms.
        self.kernel_initializer = None if kernel_initializer is None else keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.fused = bool(fused)
        self.dense_layers = [] if self.fused else self._make_dense_layers()

    def _make_dense_layers(self) -> list:
        """The naive form: ``E * len(units)`` Dense layers, expert-major."""
        return [
            keras.layers.Dense(
                u, activation=self.activation, name=f"expert_{e}_dense_{i}",
                kernel_initializer=self.kernel_initializer or "glorot_uniform",
                bias_initializer=self.bias_initializer,
            )
            for e in range(self.num_experts)
            for i, u in enumerate(self.units)
        ]

    def expert_dense(self, expert: int, layer: int) -> keras.layers.Dense:
        """The naive form's Dense layer ``layer`` of expert ``expert``."""
        return self.dense_layers[expert * len(self.units) + layer]

    def _stacked_initializer(self):
        if self.kernel_initializer is not None:
            return self.kernel_initializer
        # Keras counts the leading E axis in the fans of a 3-D kernel; scale=E undoes that.
        return keras.initializers.VarianceScaling(scale=float(self.num_experts), mode="fan_avg", distribution="uniform")

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        if not self.fused:
            for e in range(self.num_experts):
                width = d_in
                for i, d_out in enumerate(self.units):
                    self.expert_dense(e, i).build((None, width))
                    width = d_out
            return
        self.kernels, self.biases = [], []
        for i, d_out in enumerate(self.units):
            self.kernels.append(
                self.add_weight(name=f"kernel_{i}", shape=(self.num_experts, d_in, d_out), initializer=self._stacked_initializer())
            )
            self.biases.append(
                self.add_weight(name=f"bias_{i}", shape=(self.num_experts, d_out), initializer=self.bias_initializer)
            )
            d_in = d_out

    def call(self, inputs):
        outputs = self.expert_outputs(inputs)
        return ops.stack(outputs, axis=1) if isinstance(outputs, list) else outputs  # (batch, E, units[-1])

    def expert_outputs(self, inputs):
        """The experts' outputs in the form they are computed, for :func:`mmoe.layers.mixture.mix`.

        Args:
            inputs: ``(batch, input_dim)``.

        Returns:
            Deeper fused experts and naive experts: a list of E ``(batch, units[-1])`` tensors,
            which a mixture sums directly (stacking them first costs a copy of every expert's
            output and a batched product; the list form trained 1.02-1.05x faster at the reference
            size in interleaved A/Bs, see ``benchmarks/train.py``). One-layer fused experts: the ``(batch, E, units)``
            tensor of their single matmul. ``call`` stacks the list.
        """
        if not self.fused:
            return self._call_naive(inputs)
        if len(self.units) == 1:
            return self._one_wide_matmul(inputs)
        return self._expert_chains(inputs)

    def _one_wide_matmul(self, inputs):
        """One-layer experts: ``(batch, d_in) x (d_in, E * u)``, a single GEMM for all experts."""
        experts, width = self.num_experts, self.units[0]
        kernel = self.kernels[0]  # (E, d_in, u)
        wide = ops.reshape(ops.transpose(kernel, (1, 0, 2)), (kernel.shape[1], experts * width))  # block e = expert e
        x = ops.matmul(inputs, wide) + ops.reshape(self.biases[0], (experts * width,))  # (batch, E * u)
        return ops.reshape(self.activation(x), (-1, experts, width))  # (batch, E, u)

    def _expert_chains(self, inputs) -> list:
        """Deeper experts: E independent matmul chains on slices of the stacked kernels.

        ``unstack`` slices ``[E, d, u]`` into E contiguous ``[d, u]`` kernels (its gradient is
        one ``stack``); the E chains share no op, so TensorFlow runs them in parallel.
        """
        chains = [inputs] * self.num_experts  # E x (batch, d_in)
        for kernel, bias in zip(self.kernels, self.biases):
            chains = [
                self.activation(ops.matmul(h, k) + b)  # (batch, d) x (d, u) -> (batch, u)
                for h, k, b in zip(chains, ops.unstack(kernel, axis=0), ops.unstack(bias, axis=0))
            ]
        return chains  # E x (batch, units[-1])

    def buffer_outputs(self, buffers):
        """Each expert on its own rows only (sparse dispatch, :mod:`mmoe.layers.dispatch`).

        Args:
            buffers: ``(E, C, input_dim)``: expert ``e`` computes ``buffers[e]`` alone.

        Returns:
            ``(E, C, units[-1])``. Fused: one batched matmul per layer, ``(E, C, d) x (E, d, u)``
            (``C * E`` rows in all instead of ``B * E``); naive: each expert's Dense layers on its slice.
        """
        if not self.fused:
            outputs = []
            for e in range(self.num_experts):
                x = buffers[e]
                for i in range(len(self.units)):
                    x = self.expert_dense(e, i)(x)  # (C, units[i])
                outputs.append(x)
            return ops.stack(outputs, axis=0)
        x = buffers
        for kernel, bias in zip(self.kernels, self.biases):
            x = self.activation(ops.matmul(x, kernel) + ops.expand_dims(bias, 1))  # (E, C, u)
        return x

    def _call_naive(self, inputs) -> list:
        outputs = []
        for e in range(self.num_experts):
            x = inputs
            for i in range(len(self.units)):
                x = self.expert_dense(e, i)(x)  # (batch, units[i])
            outputs.append(x)
        return outputs  # E x (batch, units[-1])

    def expert_weights(self) -> list[tuple]:
        """Per layer ``(kernel [E, d_in, d_out], bias [E, d_out])`` as numpy, in either form."""
        if self.fused:
            return [(ops.convert_to_numpy(k), ops.convert_to_numpy(b)) for k, b in zip(self.kernels, self.biases)]
        stacked = []
        for i in range(len(self.units)):
            layers = [self.expert_dense(e, i) for e in range(self.num_experts)]
            stacked.append((
                np.stack([ops.convert_to_numpy(layer.kernel) for layer in layers]),
                np.stack([ops.convert_to_numpy(layer.bias) for layer in layers]),
            ))
        return stacked

    def set_expert_weights(self, weights) -> None:
        """Loads :meth:`expert_weights` output (from either form) into this bank."""
        if len(weights) != len(self.units):
            raise ValueError(f"expected weights for {len(self.units)} layers, got {len(weights)}")
        for i, (kernel, bias) in enumerate(weights):
            if self.fused:
                self.kernels[i].assign(kernel)
                self.biases[i].assign(bias)
                continue
            for e in range(self.num_experts):
                self.expert_dense(e, i).set_weights([kernel[e], bias[e]])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts, self.units[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": (
                None if self.kernel_initializer is None else keras.initializers.serialize(self.kernel_initializer)
            ),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "fused": self.fused,
        }
