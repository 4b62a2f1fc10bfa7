"""Keras 3 layers of the MMoE family; every one is registered for serialization."""

from mmoe.layers.experts import ExpertBank
from mmoe.layers.gate import SoftmaxGate
from mmoe.layers.mlp import MLP
from mmoe.layers.mmoe import MMoE
from mmoe.layers.preprocessing import CastToFloat, FixedValue, Log1p

__all__ = ["CastToFloat", "FixedValue", "ExpertBank", "Log1p", "MLP", "MMoE", "SoftmaxGate"]
