"""What MMoE, OMoE and CGC share: expert banks, softmax gates over them, and the gated mixture."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from feature_specs.spec import GATE_TYPES
from mmoe.layers.dispatch import dispatched_mixtures
from mmoe.layers.dselect import DSelectKGate, hard_selection
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
            (capped at a gate's expert count). With softmax gates each example is dispatched to
            its k experts only (:mod:`mmoe.layers.dispatch`; MMoE and OMoE over one bank, CGC
            and PLE over a task's own bank and the shared one), in training and at inference.
            Defaults to 0 (dense).
        gate_type: str. ``"softmax"`` or ``"dselect_k"`` (:class:`DSelectKGate` with
            ``gate_top_k`` selectors: trained dense, as in the paper; at inference each row keeps
            its k largest weights, exact once the selection is hard, and dispatched).
            Defaults to ``"softmax"``.
        capacity_factor: float >= 0. Training capacity of each expert under dispatch, in
            multiples of the average load (:func:`mmoe.layers.dispatch.train_capacity`); rows
            past it are dropped from that expert. 0: no limit (nothing dropped; the buffers' size
            then depends on the data, which XLA cannot compile). Defaults to 1.25.
        dselect_gamma: float > 0. DSelect-k smooth-step width. Defaults to 1.0.
        dselect_entropy_weight: float >= 0. DSelect-k entropy regularizer weight. Defaults to 0.
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
        gate_type: str = "softmax",
        capacity_factor: float = 1.25,
        dselect_gamma: float = 1.0,
        dselect_entropy_weight: float = 0.0,
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
        if gate_type not in GATE_TYPES:
            raise ValueError(f"`gate_type` must be one of {GATE_TYPES}, got {gate_type!r}")
        if gate_type == "dselect_k" and not int(gate_top_k) >= 1:
            raise ValueError(f"`gate_type='dselect_k'` needs `gate_top_k` >= 1 selectors, got {gate_top_k!r}")
        if capacity_factor < 0:
            raise ValueError(f"`capacity_factor` must be >= 0, got {capacity_factor!r}")
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
        self.gate_type = gate_type
        self.capacity_factor = float(capacity_factor)
        self.dselect_gamma = float(dselect_gamma)
        self.dselect_entropy_weight = float(dselect_entropy_weight)

    def _experts(self, num_experts: int, name: str) -> ExpertBank:
        return ExpertBank(num_experts, self.expert_units, activation=self.activation, fused=self.fused_experts, name=name)

    def _gate(self, num_experts: int, name: str, index: int):
        seed = None if self.seed is None else self.seed + index
        if self.gate_type == "dselect_k":
            return DSelectKGate(
                num_experts, k=min(self.gate_top_k, num_experts), gamma=self.dselect_gamma,
                entropy_weight=self.dselect_entropy_weight, hidden_units=self.gate_units, seed=seed, name=name,
            )
        return SoftmaxGate(
            num_experts, temperature=self.gate_temperature, hidden_units=self.gate_units,
            top_k=min(self.gate_top_k, num_experts), expert_dropout=self.expert_dropout,
            seed=None if self.seed is None else self.seed + index, name=name,
        )

    def gate_layers(self) -> list:
        """Every gate of this layer (staged training trains them apart from the rest)."""
        extra = getattr(self, "shared_gate", None)
        return list(self.gates) + ([extra] if isinstance(extra, keras.layers.Layer) else [])

    def _top_k(self, num_experts: int) -> int:
        """The k of each gate over ``num_experts`` experts; 0 when every expert takes part."""
        k = min(self.gate_top_k, num_experts)
        return k if 0 < k < num_experts else 0

    def _gate_weights(self, gate, gate_input, training):
        """``gate``'s ``(batch, E)`` weights; a DSelect-k gate's hard selection at inference."""
        weights = gate(gate_input, training=training)
        k = self._top_k(gate.num_experts)
        if self.gate_type == "dselect_k" and k and not training:
            weights = hard_selection(weights, k)
        return weights

    def _dispatches(self, num_experts: int, training) -> bool:
        """Whether gates over ``num_experts`` experts send each row to its chosen experts only:
        top-k softmax gates always, DSelect-k gates (trained dense) at inference."""
        if not self._top_k(num_experts):
            return False
        return self.gate_type == "softmax" or not training

    def _capacity_factor(self, training) -> float | None:
        """The dispatch's capacity factor: the layer's in training; None (nothing dropped) at inference."""
        return self.capacity_factor if training and self.capacity_factor > 0 else None

    def _dispatched(self, weights: list, inputs, bank: ExpertBank, training) -> list:
        """Mixtures of ``bank`` for each gate's weights, rows dispatched to their chosen experts."""
        k = self._top_k(bank.num_experts)
        mixtures, _ = dispatched_mixtures(weights, inputs, bank, k, self._capacity_factor(training))
        return mixtures

    def _mix(self, gate, gate_input, experts, training):
        """``(mixture (batch, units), weights (batch, E))`` of ``gate`` over ``experts``."""
        weights = self._gate_weights(gate, gate_input, training)
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
            "gate_type": self.gate_type,
            "capacity_factor": self.capacity_factor,
            "dselect_gamma": self.dselect_gamma,
            "dselect_entropy_weight": self.dselect_entropy_weight,
        }
