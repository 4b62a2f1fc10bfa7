"""Keras 3 layers of the MMoE family; every one is registered for serialization."""

from mmoe.layers.dselect import DSelectKGate
from mmoe.layers.experts import ExpertBank
from mmoe.layers.gate import SoftmaxGate
from mmoe.layers.mlp import MLP
from mmoe.layers.mmoe import MMoE, OMoE
from mmoe.layers.ple import CGC, PLE
from mmoe.layers.preprocessing import CastToFloat, FixedValue, Log1p

__all__ = ["CGC", "CastToFloat", "DSelectKGate", "ExpertBank", "FixedValue", "Log1p", "MLP", "MMoE", "OMoE", "PLE", "SoftmaxGate"]
