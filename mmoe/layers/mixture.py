"""What MMoE, OMoE and CGC share: expert banks, softmax gates over them, and the gated mixture."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from mmoe.layers.experts import ExpertBank
from mmoe.layers.gate import SoftmaxGate, load_balance_loss


def mix(weights, experts):
    """Gate-weighted sum of expert outputs.

    Args:
        weights: ``(batch, E)`` gate weights.
        experts: ``(batch, E, units)`` expert outputs, or a list of E ``(batch, units)`` tensors
            (:meth:`ExpertBank.expert_outputs`), summed as they are: no stacked copy, and XLA fuses the
            sum's backward into each expert's activation gradient.

    Returns:
        ``(batch, units)``.
    """
    if isinstance(experts, (list, tuple)):
        total = weights[:, 0:1] * experts[0]
        for e in range(1, len(experts)):
            total = total + weights[:, e : e + 1] * experts[e]  # (batch, 1) * (batch, units)
        return total
    return ops.einsum("be,beu->bu", weights, experts)


def pool(*outputs):
    """Expert outputs of several banks (each :meth:`ExpertBank.expert_outputs`) as one pool for :func:`mix`:
    a list when every bank gave a list, else ``(batch, sum of E, units)``."""
    if all(isinstance(o, (list, tuple)) for o in outputs):
        return [h for o in outputs for h in o]
    return ops.concatenate([ops.stack(o, axis=1) if isinstance(o, (list, tuple)) else o for o in outputs], axis=1)


class GatedExperts(keras.layers.Layer):
    """Base of the gated expert layers: checks and keeps the gating options, builds the parts.

    Not registered and not used alone; subclasses build their banks and gates with
    :meth:`_experts` and :meth:`_gate`, mix with :meth:`_mix` and extend :meth:`get_config`.

    Args:
        task_names: list of str. Non-empty and unique; none may be in ``reserved_names``.
        num_experts: int. Shared experts E.
        expert_units: list of int. Widths of each expert's MLP layers.
        gate_temperature: float. Softmax temperature of every gate. Defaults to 1.0.
        gate_units: list of int. Hidden widths of each gate's MLP. Defaults to none (linear).
        gate_top_k: int. Sparse gating: experts outside each example's top k get weight 0
            (capped at a gate's expert count). Defaults to 0 (dense).
        expert_dropout: float. Training-time expert dropout in the gates (see SoftmaxGate).
        load_balance_weight: float >= 0. If > 0, adds ``weight * load_balance_loss`` of each
            gate to the layer's losses in training. Defaults to 0.
        activation: str. Expert activation. Defaults to ``"relu"``.
        seed: int. Seed of the gates' expert-dropout noise (gate ``i`` uses ``seed + i``).
        fused_experts: bool. Stacked expert kernels (True) or a loop of Dense layers (False):
            the same function, see :class:`ExpertBank`. Defaults to True.
    """

    reserved_names: tuple[str, ...] = ()

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
        if not task_names or len(set(task_names)) != len(task_names) or set(task_names) & set(self.reserved_names):
            rule = "non-empty and unique"
            if self.reserved_names:
                rule = f"non-empty, unique and not {', '.join(map(repr, self.reserved_names))}"
            raise ValueError(f"`task_names` must be {rule}, got {task_names!r}")
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

    def _experts(self, num_experts: int, name: str) -> ExpertBank:
        return ExpertBank(num_experts, self.expert_units, activation=self.activation, fused=self.fused_experts, name=name)

    def _gate(self, num_experts: int, name: str, index: int) -> SoftmaxGate:
        return SoftmaxGate(
            num_experts, temperature=self.gate_temperature, hidden_units=self.gate_units,
            top_k=min(self.gate_top_k, num_experts), expert_dropout=self.expert_dropout,
            seed=None if self.seed is None else self.seed + index, name=name,
        )

    def _mix(self, gate, gate_input, experts, training):
        """``(mixture (batch, units), weights (batch, E))`` of ``gate`` over ``experts``."""
        weights = gate(gate_input, training=training)
        self._add_balance_losses([weights], training)
        return mix(weights, experts), weights

    def _add_balance_losses(self, weights, training) -> None:
        if training and self.load_balance_weight > 0:
            for w in weights:
                self.add_loss(self.load_balance_weight * load_balance_loss(w))

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
