"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018) and its one-gate ablation, OMoE."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from mmoe.layers.experts import ExpertBank
from mmoe.layers.gate import SoftmaxGate, load_balance_loss
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
        gate_units: list of int. Hidden widths of each gate's MLP. Defaults to none (linear).
        gate_top_k: int. Sparse gating: experts outside each example's top k get weight 0.
        expert_dropout: float. Training-time expert dropout in the gates (see SoftmaxGate).
        load_balance_weight: float. If > 0, adds ``weight * load_balance_loss`` of each gate to
            the model's losses in training. Defaults to 0.
        activation: str. Expert activation. Defaults to ``"relu"``.
        seed: int. Seed of the gates' expert-dropout noise.
        fused_experts: bool. Stacked expert kernels (True) or a loop of Dense layers (False):
            the same function, see :class:`ExpertBank`. Defaults to True.

    Input shape:
        ``(batch_size, input_dim)``.

    Output:
        A tuple ``(mixtures, gate_weights)``: ``mixtures`` maps each task name to a tensor of
        shape ``(batch_size, expert_units[-1])``; ``gate_weights`` has shape
        ``(batch_size, num_tasks, num_experts)`` in ``task_names`` order.
    """

    shared_gate = False

    def __init__(
        self,
        task_names: Sequence[str],
        num_experts: int,
        expert_units: Sequence[int],
        gate_temperature: float = 1.0,
        gate_units: Sequence[int] = (),
        gate_top_k: int = 0,
        expert_dropout: float = 0.0,
        load_balance_weight: float = 0.0,
        activation: str = "relu",
        seed: int | None = None,
        fused_experts: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        task_names = [str(t) for t in task_names]
        if not task_names or len(set(task_names)) != len(task_names):
            raise ValueError(f"`task_names` must be non-empty and unique, got {task_names!r}")
        if load_balance_weight < 0:
            raise ValueError(f"`load_balance_weight` must be >= 0, got {load_balance_weight!r}")
        self.task_names = task_names
        self.num_experts = int(num_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.gate_temperature = float(gate_temperature)
        self.gate_units = [int(u) for u in gate_units]
        self.gate_top_k = int(gate_top_k)
        self.expert_dropout = float(expert_dropout)
        self.load_balance_weight = float(load_balance_weight)
        self.activation = activation
        self.seed = seed
        self.fused_experts = bool(fused_experts)
        self.experts = ExpertBank(
            self.num_experts, self.expert_units, activation=activation, fused=self.fused_experts, name="experts"
        )
        gate_names = ["gate"] if self.shared_gate else [f"gate_{task}" for task in task_names]
        self.gates = [
            SoftmaxGate(
                self.num_experts, temperature=self.gate_temperature, hidden_units=self.gate_units,
                top_k=self.gate_top_k, expert_dropout=self.expert_dropout,
                seed=None if seed is None else seed + i, name=name,
            )
            for i, name in enumerate(gate_names)
        ]

    def build(self, input_shape):
        self.experts.build(input_shape)
        for gate in self.gates:
            gate.build(input_shape)

    def call(self, inputs, training=None):
        experts = self.experts(inputs)  # (batch, E, units)
        weights = [gate(inputs, training=training) for gate in self.gates]  # gates x (batch, E)
        if training and self.load_balance_weight > 0:
            for w in weights:
                self.add_loss(self.load_balance_weight * load_balance_loss(w))
        if self.shared_gate:
            weights = weights * len(self.task_names)
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
            "gate_units": self.gate_units,
            "gate_top_k": self.gate_top_k,
            "expert_dropout": self.expert_dropout,
            "load_balance_weight": self.load_balance_weight,
            "activation": self.activation,
            "seed": self.seed,
            "fused_experts": self.fused_experts,
        }


@register
class OMoE(MMoE):
    """One-gate Mixture-of-Experts: the MMoE paper's ablation, one gate shared by all tasks.

    Takes the same arguments as :class:`MMoE`. Every task receives the same mixture;
    ``gate_weights`` repeats the one gate for each task, ``(batch_size, num_tasks, num_experts)``.
    """

    shared_gate = True
