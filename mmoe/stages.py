"""Staged training (experts first, then gates, then jointly): which variables each epoch trains.

Mixtures of experts are also trained hierarchically: experts with the gates held fixed, then the
gates over the trained experts, then everything together. ``training.expert_stage_epochs`` and
``training.gate_stage_epochs`` in the spec set the first two stages' lengths; the rest of the
epochs are joint. A stage's variables are the only ones the optimizer updates in it (the others
keep their values and their Adam moments).
"""

from __future__ import annotations

from feature_specs.spec import SpecError, TrainingConfig
from mmoe.architectures import GATED

EXPERTS, GATES, JOINT = "experts", "gates", "joint"


def stage_of_epoch(training: TrainingConfig, epoch: int) -> str:
    """The stage that 0-based ``epoch`` belongs to."""
    if epoch < training.expert_stage_epochs:
        return EXPERTS
    if epoch < training.expert_stage_epochs + training.gate_stage_epochs:
        return GATES
    return JOINT


def gate_variables(model) -> list:
    """The trainable variables of every gate of ``model``'s gated layers (those with ``gate_layers``)."""
    return [
        variable
        for layer in model.layers
        for gate in (layer.gate_layers() if hasattr(layer, "gate_layers") else [])
        for variable in gate.trainable_variables
    ]


def stage_variables(stage: str, variables: list, gates: list) -> list:
    """The subset of ``variables`` trained in ``stage``: all but ``gates``, ``gates`` alone, or all.

    Raises:
        SpecError: a gates-only or experts-only stage for a model without gates.
    """
    if stage == JOINT:
        return list(variables)
    if not gates:
        key = "training.expert_stage_epochs" if stage == EXPERTS else "training.gate_stage_epochs"
        raise SpecError(key, f"staged training needs a gated architecture ({', '.join(GATED)})")
    gate_ids = {id(v) for v in gates}
    return [v for v in variables if (id(v) in gate_ids) == (stage == GATES)]
