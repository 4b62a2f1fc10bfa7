"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018) and its one-gate ablation, OMoE."""

from __future__ import annotations

from typing import Sequence

from keras import ops

from mmoe.layers.mixture import GatedExperts, mix
from mmoe.registry import register


@register
class MMoE(GatedExperts):
    """Shared experts mixed by one softmax gate per task.

    For task t: ``h_t = sum_e g_t(x)_e * expert_e(x)`` with ``g_t = softmax(W_t x / temperature)``.

    Args:
        task_names: list of str. One gate per task; outputs are keyed by these names.
        num_experts: int. Number of shared experts E.
        expert_units: list of int. Widths of each expert's MLP layers.
        **kwargs: the gating options of :class:`mmoe.layers.mixture.GatedExperts`
            (``gate_temperature``, ``gate_units``, ``gate_top_k``, ``gate_type``,
            ``capacity_factor``, ``dselect_gamma``, ``dselect_entropy_weight``,
            ``expert_dropout``, ``load_balance_weight``, ``activation``, ``seed``,
            ``fused_experts``) and Layer arguments. With ``gate_top_k`` = k < E the gates' choices
            share one sparse dispatch (:mod:`mmoe.layers.dispatch`): each row is computed by its
            chosen experts only.

    Input shape:
        ``(batch_size, input_dim)``.

    Output:
        A tuple ``(mixtures, gate_weights)``: ``mixtures`` maps each task name to a tensor of
        shape ``(batch_size, expert_units[-1])``; ``gate_weights`` has shape
        ``(batch_size, num_tasks, num_experts)`` in ``task_names`` order.
    """

    shared_gate = False

    def __init__(self, task_names: Sequence[str], num_experts: int, expert_units: Sequence[int], **kwargs):
        super().__init__(task_names, num_experts, expert_units, **kwargs)
        self.experts = self._experts(self.num_experts, "experts")
        gate_names = ["gate"] if self.shared_gate else [f"gate_{task}" for task in self.task_names]
        self.gates = [self._gate(self.num_experts, name, i) for i, name in enumerate(gate_names)]

    def build(self, input_shape):
        self.experts.build(input_shape)
        for gate in self.gates:
            gate.build(input_shape)

    def call(self, inputs, training=None):
        weights = [self._gate_weights(gate, inputs, training) for gate in self.gates]  # gates x (batch, E)
        self._add_balance_losses(weights, training)
        if self._dispatches(self.num_experts, training):  # each row computed by its chosen experts only
            mixed = self._dispatched(weights, inputs, self.experts, training)
        else:
            experts = self.experts.expert_outputs(inputs)  # E x (batch, units), or (batch, E, units)
            mixed = [mix(w, experts) for w in weights]
        if self.shared_gate:
            weights, mixed = weights * len(self.task_names), mixed * len(self.task_names)
        mixtures = dict(zip(self.task_names, mixed))
        return mixtures, ops.stack(weights, axis=1)  # (batch, T, E)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        mixtures = {task: (batch, self.expert_units[-1]) for task in self.task_names}
        return mixtures, (batch, len(self.task_names), self.num_experts)


@register
class OMoE(MMoE):
    """One-gate Mixture-of-Experts: the MMoE paper's ablation, one gate shared by all tasks.

    Takes the same arguments as :class:`MMoE`. Every task receives the same mixture;
    ``gate_weights`` repeats the one gate for each task, ``(batch_size, num_tasks, num_experts)``.
    """

    shared_gate = True
