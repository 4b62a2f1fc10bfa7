"""The model family: one registry of backbones that share the input encoder and towers.

A backbone turns the encoded features into one representation per task. Every architecture
is trained, evaluated and exported by the same code; only this step differs:

==============  ==========================================================================
mmoe            shared experts, one softmax gate per task (Ma et al., KDD 2018)
omoe            shared experts, one gate shared by all tasks (the paper's ablation)
shared_bottom   one MLP shared by all tasks (Caruana 1997)
single_task     an independent network per task, embeddings included: as if trained alone
cgc             task-specific plus shared experts, one gate per task (Tang et al., RecSys 2020)
ple             stacked CGC levels: Progressive Layered Extraction (Tang et al., RecSys 2020)
stem            CGC over shared and task-specific embeddings: each task's experts and gate read
                embedding tables of their own, the shared experts the shared tables; each task's
                gate also mixes the other tasks' experts through a stop-gradient (STEM-Net, Su et
                al., AAAI 2024)
==============  ==========================================================================

``BACKBONES`` below is the one list of architectures: the spec's ``model.architecture`` and the
CLI's ``--model`` take their choices from it. To add one, write its builder here and add it to
``BACKBONES``. This module imports its layers (Keras) only when a builder runs, so the CLI can read
the names without starting TensorFlow.
"""

from __future__ import annotations

from typing import Callable

from feature_specs.spec import FeatureSpec, ModelConfig, SpecError
from feature_specs.spec_nodes import quoted

# encode(prefix) -> (batch, width): the encoded model features, built with layers named prefix*.
Encode = Callable[[str], object]
Backbone = Callable[[FeatureSpec, Encode], tuple[dict, object]]


def _gate_options(config: ModelConfig, seed: int) -> dict:
    """Keyword arguments shared by the gated layers (MMoE, OMoE, CGC/PLE): gates and experts."""
    return dict(
        gate_temperature=config.gate_temperature,
        gate_units=config.gate_units,
        gate_top_k=config.gate_top_k,
        expert_dropout=config.expert_dropout,
        load_balance_weight=config.load_balance_weight,
        seed=seed,
        fused_experts=config.fused_experts,
        gate_type=config.gate_type,
        capacity_factor=config.expert_capacity_factor,
        dselect_gamma=config.dselect_gamma,
        dselect_entropy_weight=config.dselect_entropy_weight,
    )


def _mixture(layer_name: str):
    def build(spec: FeatureSpec, encode: Encode):
        from mmoe import layers

        config = spec.model
        return getattr(layers, layer_name)(
            task_names=spec.task_names, num_experts=config.num_experts, expert_units=config.expert_units,
            name=spec.model.architecture, **_gate_options(config, spec.training.seed),
        )(encode(""))

    return build


def _extraction(num_levels: Callable[[ModelConfig], int]):
    def build(spec: FeatureSpec, encode: Encode):
        from mmoe.layers import PLE

        config = spec.model
        return PLE(
            spec.task_names, num_levels=num_levels(config), num_experts=config.num_experts,
            task_experts=config.task_experts, expert_units=config.expert_units,
            name=config.architecture, **_gate_options(config, spec.training.seed),
        )(encode(""))

    return build


def _task_embeddings(spec: FeatureSpec, encode: Encode):
    from mmoe.layers import CGC
    from mmoe.layers.ple import SHARED

    config = spec.model
    inputs = {task: encode(f"{task}_") for task in spec.task_names}  # tables of the task's own
    inputs[SHARED] = encode("")
    return CGC(
        spec.task_names, num_experts=config.num_experts, task_experts=config.task_experts,
        expert_units=config.expert_units, transfer_experts=True, name=config.architecture,
        **_gate_options(config, spec.training.seed),
    )(inputs)


def _shared_bottom(spec: FeatureSpec, encode: Encode):
    from mmoe.layers import MLP

    bottom = MLP(spec.model.bottom_units, name="shared_bottom")(encode(""))
    return {task: bottom for task in spec.task_names}, None


def _single_task(spec: FeatureSpec, encode: Encode):
    from mmoe.layers import MLP

    return {
        task: MLP(spec.model.bottom_units, name=f"bottom_{task}")(encode(f"{task}_")) for task in spec.task_names
    }, None


BACKBONES: dict[str, Backbone] = {
    "mmoe": _mixture("MMoE"),
    "omoe": _mixture("OMoE"),
    "shared_bottom": _shared_bottom,
    "single_task": _single_task,
    "cgc": _extraction(lambda config: 1),
    "ple": _extraction(lambda config: config.num_levels),
    "stem": _task_embeddings,
}


ARCHITECTURES = tuple(BACKBONES)
GATED = ("mmoe", "omoe", "cgc", "ple", "stem")  # the architectures with gates (and gate weights)
OWN_AND_SHARED_EXPERTS = ("cgc", "ple", "stem")  # their gates list each task's own experts first, the shared ones last


def check_architecture(spec: FeatureSpec) -> FeatureSpec:
    """Returns ``spec`` if its ``model.architecture`` is one of :data:`ARCHITECTURES`.

    Raises:
        SpecError: naming the key path ``model.architecture`` and the choices.
    """
    if spec.model.architecture not in BACKBONES:
        raise SpecError(
            "model.architecture", f"unknown value {quoted(spec.model.architecture)}; expected one of {', '.join(BACKBONES)}"
        )
    return spec


def build_backbone(spec: FeatureSpec, encode: Encode) -> tuple[dict, object]:
    """Per-task representations ``{task: (batch, width)}`` and gate weights (or None).

    Gate weights are ``(batch, tasks, experts)`` for gated architectures (for cgc/ple/stem: each
    task's own experts first, the shared ones last; stem's list the other tasks' experts between).

    Raises:
        SpecError: an architecture not in :data:`ARCHITECTURES`.
    """
    return BACKBONES[check_architecture(spec).model.architecture](spec, encode)
