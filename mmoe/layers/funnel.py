"""Funnel arithmetic for ESMM and AITM heads: the logit of a product of two probabilities, and
a conditional probability from two joint ones. Neither has weights."""

from __future__ import annotations

import keras
from keras import ops

from mmoe.registry import register

RATIO_FLOOR = 1e-7  # the earlier step's probability is floored here before dividing by it


@register
class FunnelLogit(keras.layers.Layer):
    """The logit of ``sigmoid(a) * sigmoid(b)``: ESMM's pCTCVR = pCTR x pCVR, as a logit.

    ``logit(sigmoid(a) sigmoid(b)) = a + b - log(1 + e^a + e^b)``, computed with a logsumexp, so
    the binary cross-entropy from logits applies unchanged and stays finite at any logit.

    Input shape:
        a list ``[a, b]`` of ``(batch_size, 1)`` logits: the earlier step's (e.g. click) and the
        conditional step's (e.g. conversion given click).

    Output shape:
        ``(batch_size, 1)``.
    """

    def call(self, inputs):
        a, b = inputs
        stacked = ops.stack([ops.zeros_like(a), a, b], axis=-1)  # (batch, 1, 3)
        return a + b - ops.logsumexp(stacked, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@register
class ConditionalProbability(keras.layers.Layer):
    """``P(later | earlier) = P(later and earlier) / P(earlier)``, clipped to ``[0, 1]``.

    For a funnel whose later step can only follow the earlier one, the later task's probability
    is the joint one (e.g. pCTCVR), and this gives the conditional (pCVR).

    Input shape:
        a list ``[joint, earlier]`` of ``(batch_size, 1)`` probabilities.

    Output shape:
        ``(batch_size, 1)``.
    """

    def call(self, inputs):
        joint, earlier = inputs
        return ops.clip(joint / ops.maximum(earlier, RATIO_FLOOR), 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
