"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): shared experts, one gate per task."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from mmoe.layers.experts import ExpertBank
from mmoe.layers.gate import SoftmaxGate
from mmoe.registry import register


@register
class MMoE(keras.layers.Layer):
    """Shared experts mixed by one softmax gate per task.

    For task t: ``h_t = sum_e g_t(x)_e * expert_e(x)`` with ``g_t = softmax(W_t x / temperature)``.

    Args:
        task_names: list of str. One gate per task; outputs are keyed by these names.
        num_experts: int. Number of shared experts E.
        expert_units: list of int. Widths of each expert's MLP layers.
        gate_temperature: float. Softmax temperature of every gate. Defaults to 1.0.
        activation: str. Expert activation. Defaults to ``"relu"``.

    Input shape:
        ``(batch_size, input_dim)``.

    Output:
        A tuple ``(mixtures, gate_weights)``: ``mixtures`` maps each task name to a tensor of
        shape ``(batch_size, expert_units[-1])``; ``gate_weights`` has shape
        ``(batch_size, num_tasks, num_experts)`` in ``task_names`` order.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        num_experts: int,
        expert_units: Sequence[int],
        gate_temperature: float = 1.0,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        task_names = [str(t) for t in task_names]
        if not task_names or len(set(task_names)) != len(task_names):
            raise ValueError(f"`task_names` must be non-empty and unique, got {task_names!r}")
        self.task_names = task_names
        self.num_experts = int(num_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.gate_temperature = float(gate_temperature)
        self.activation = activation
        self.experts = ExpertBank(self.num_experts, self.expert_units, activation=activation, name="experts")
        self.gates = [
            SoftmaxGate(self.num_experts, temperature=self.gate_temperature, name=f"gate_{task}")
            for task in task_names
        ]

    def build(self, input_shape):
        self.experts.build(input_shape)
        for gate in self.gates:
            gate.build(input_shape)

    def call(self, inputs):
        experts = self.experts(inputs)  # (batch, E, units)
        weights = [gate(inputs) for gate in self.gates]  # T x (batch, E)
        mixtures = {
            task: ops.einsum("be,beu->bu", w, experts) for task, w in zip(self.task_names, weights)
        }
        return mixtures, ops.stack(weights, axis=1)  # (batch, T, E)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        mixtures = {task: (batch, self.expert_units[-1]) for task in self.task_names}
        return mixtures, (batch, len(self.task_names), self.num_experts)

    def get_config(self):
        return {
            **super().get_config(),
            "task_names": self.task_names,
            "num_experts": self.num_experts,
            "expert_units": self.expert_units,
            "gate_temperature": self.gate_temperature,
            "activation": self.activation,
        }
