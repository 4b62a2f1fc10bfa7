"""Customized Gate Control and Progressive Layered Extraction (Tang et al., RecSys 2020)."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from mmoe.layers.dispatch import pooled_mixtures
from mmoe.layers.mixture import GatedExperts, pool
from mmoe.registry import register

SHARED = "shared"


@register
class CGC(GatedExperts):
    """One extraction level: each task mixes its own experts and the shared experts.

    Task t's gate weighs ``task_experts`` experts of its own followed by ``num_experts`` shared
    ones. With ``output_shared`` (every PLE level but the last), a shared gate over all experts
    also produces the shared input of the next level.

    Args:
        task_names: list of str. Tasks, keying inputs and outputs.
        num_experts: int. Shared experts.
        task_experts: int. Experts owned by each task.
        expert_units: list of int. Widths of each expert's MLP layers.
        output_shared: bool. Also return a ``"shared"`` mixture. Defaults to False.
        transfer_experts: bool. Task t's gate also weighs the other tasks' own experts, through a
            stop-gradient: t's loss reads them but trains only its own and the shared experts
            (STEM's "all forward, task-specific backward", Su et al., AAAI 2024). Computed densely,
            also with ``gate_top_k``. Defaults to False.
        **kwargs: the gating options of :class:`mmoe.layers.mixture.GatedExperts`
            (``gate_temperature``, ``gate_units``, ``gate_top_k``, ``expert_dropout``,
            ``load_balance_weight``, ``activation``, ``seed``, ``fused_experts``) and Layer
            arguments.

    Input:
        A tensor ``(batch_size, input_dim)`` (first level), or a dict with one tensor per task
        and ``"shared"`` (the previous level's outputs).

    Output:
        ``(mixtures, gate_weights)``: ``mixtures`` maps each task (and ``"shared"`` with
        ``output_shared``) to ``(batch_size, expert_units[-1])``; ``gate_weights`` is
        ``(batch_size, num_tasks, task_experts + num_experts)``, own experts first (with
        ``transfer_experts``: own, then the other tasks' in ``task_names`` order, then the shared
        ones, ``(batch_size, num_tasks, num_tasks * task_experts + num_experts)``).
    """

    reserved_names = (SHARED,)

    def __init__(
        self,
        task_names: Sequence[str],
        num_experts: int,
        task_experts: int,
        expert_units: Sequence[int],
        output_shared: bool = False,
        transfer_experts: bool = False,
        **kwargs,
    ):
        super().__init__(task_names, num_experts, expert_units, **kwargs)
        self.task_experts = int(task_experts)
        self.output_shared = bool(output_shared)
        self.transfer_experts = bool(transfer_experts)
        self.shared_experts = self._experts(self.num_experts, "shared_experts")
        self.own_experts = [self._experts(self.task_experts, f"experts_{task}") for task in self.task_names]
        per_task = self._experts_per_gate()
        self.gates = [self._gate(per_task, f"gate_{task}", i) for i, task in enumerate(self.task_names)]
        self.shared_gate = (
            self._gate(self.task_experts * len(self.task_names) + self.num_experts, "gate_shared", len(self.task_names))
            if self.output_shared
            else None
        )

    def _experts_per_gate(self) -> int:
        """How many experts each task's gate weighs."""
        tasks = len(self.task_names) if self.transfer_experts else 1
        return tasks * self.task_experts + self.num_experts

    def _split(self, inputs) -> dict:
        if isinstance(inputs, dict):
            return inputs
        return {name: inputs for name in [*self.task_names, SHARED]}

    def build(self, input_shape):
        shapes = self._split(input_shape)
        self.shared_experts.build(shapes[SHARED])
        for task, experts, gate in zip(self.task_names, self.own_experts, self.gates):
            experts.build(shapes[task])
            gate.build(shapes[task])
        if self.shared_gate is not None:
            self.shared_gate.build(shapes[SHARED])

    def call(self, inputs, training=None):
        inputs = self._split(inputs)
        if not self.transfer_experts and self._dispatches(self.task_experts + self.num_experts, training):
            return self._dispatched_call(inputs, training)
        # each bank's outputs: Es (or Et) x (batch, units), or (batch, Es, units); see ExpertBank.expert_outputs
        shared = self.shared_experts.expert_outputs(inputs[SHARED])
        own = [experts.expert_outputs(inputs[task]) for task, experts in zip(self.task_names, self.own_experts)]
        frozen = [_stop_gradient(o) for o in own] if self.transfer_experts else []  # what other tasks' gates read
        mixtures, gate_weights = {}, []
        for t, (task, task_own, gate) in enumerate(zip(self.task_names, own, self.gates)):
            others = [o for j, o in enumerate(frozen) if j != t]
            experts = pool(task_own, *others, shared)  # the task's own first, the shared last
            mixtures[task], weights = self._mix(gate, inputs[task], experts, training)
            gate_weights.append(weights)
        if self.shared_gate is not None:
            experts = pool(*own, shared)  # T * Et + Es experts
            mixtures[SHARED], _ = self._mix(self.shared_gate, inputs[SHARED], experts, training)
        return mixtures, ops.stack(gate_weights, axis=1)

    def _dispatched_call(self, inputs: dict, training):
        """``call`` with each row computed only by the experts its gates chose: banks are each
        task's own experts, then the shared ones; task t's gate weighs banks ``[t, shared]``, the
        shared gate every bank (:func:`mmoe.layers.dispatch.pooled_mixtures`)."""
        tasks = len(self.task_names)
        gates, gate_inputs = list(self.gates), [inputs[task] for task in self.task_names]
        gate_banks = [[t, tasks] for t in range(tasks)]
        if self.shared_gate is not None:
            gates.append(self.shared_gate)
            gate_inputs.append(inputs[SHARED])
            gate_banks.append(list(range(tasks + 1)))
        weights = [self._gate_weights(gate, x, training) for gate, x in zip(gates, gate_inputs)]
        self._add_balance_losses(weights, training)
        banks = [*self.own_experts, self.shared_experts]
        ks = [self._top_k(gate.num_experts) or gate.num_experts for gate in gates]
        mixed, _ = pooled_mixtures(weights, gate_banks, banks, [*gate_inputs[:tasks], inputs[SHARED]], ks,
                                   self._capacity_factor(training))
        names = [*self.task_names, SHARED] if self.shared_gate is not None else self.task_names
        return dict(zip(names, mixed)), ops.stack(weights[:tasks], axis=1)

    def compute_output_shape(self, input_shape):
        shapes = self._split(input_shape)
        batch = shapes[SHARED][0]
        names = [*self.task_names, SHARED] if self.output_shared else self.task_names
        return (
            {name: (batch, self.expert_units[-1]) for name in names},
            (batch, len(self.task_names), self._experts_per_gate()),
        )

    def get_config(self):
        return {
            **super().get_config(), "task_experts": self.task_experts, "output_shared": self.output_shared,
            "transfer_experts": self.transfer_experts,
        }


def _stop_gradient(outputs):
    """An expert bank's outputs (a list of ``(batch, units)``, or ``(batch, E, units)``) as constants for the gradient."""
    if isinstance(outputs, (list, tuple)):
        return [ops.stop_gradient(h) for h in outputs]
    return ops.stop_gradient(outputs)


@register
class PLE(keras.layers.Layer):
    """Progressive Layered Extraction: ``num_levels`` stacked :class:`CGC` levels.

    Every level but the last also outputs a shared mixture that feeds the next level's shared
    experts; each task's mixture feeds its own experts and gate at the next level.

    Args:
        num_levels: int. Extraction levels (1 is plain CGC).
        Other arguments as in :class:`CGC` (``output_shared`` is set per level).

    Input shape: ``(batch_size, input_dim)``.

    Output: as :class:`CGC` without ``output_shared``: task mixtures and the last level's gate
    weights ``(batch_size, num_tasks, task_experts + num_experts)``.
    """

    def __init__(self, task_names: Sequence[str], num_levels: int, **cgc_kwargs):
        super().__init__(**{k: cgc_kwargs.pop(k) for k in ("name", "dtype", "trainable") if k in cgc_kwargs})
        if int(num_levels) < 1:
            raise ValueError(f"`num_levels` must be >= 1, got {num_levels!r}")
        cgc_kwargs.pop("output_shared", None)
        self.task_names = [str(t) for t in task_names]
        self.num_levels = int(num_levels)
        self.cgc_kwargs = cgc_kwargs
        self.levels = [
            CGC(self.task_names, output_shared=i < self.num_levels - 1, name=f"level_{i}", **cgc_kwargs)
            for i in range(self.num_levels)
        ]

    def build(self, input_shape):
        shape = input_shape
        for level in self.levels:
            level.build(shape)
            shape = level.compute_output_shape(shape)[0]

    def call(self, inputs, training=None):
        x = inputs
        for level in self.levels:
            x, gate_weights = level(x, training=training)
        return x, gate_weights

    def gate_layers(self) -> list:
        """Every level's gates."""
        return [gate for level in self.levels for gate in level.gate_layers()]

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for level in self.levels:
            shape, gates = level.compute_output_shape(shape)
        return shape, gates

    def get_config(self):
        return {**super().get_config(), "task_names": self.task_names, "num_levels": self.num_levels, **self.cgc_kwargs}
