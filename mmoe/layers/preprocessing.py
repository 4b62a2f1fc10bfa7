"""Small preprocessing layers that Keras does not ship (no Lambda: they must reload)."""

import keras
from keras import ops

from mmoe.registry import register


@register
class Log1p(keras.layers.Layer):
    """``log1p(max(x, 0))`` as float32; negative inputs are clipped to 0.

    Input shape: any. Output shape: same as input, float32.
    """

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        return ops.log1p(ops.maximum(x, 0.0))

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class CastToFloat(keras.layers.Layer):
    """Casts numeric inputs (e.g. int64 features) to float32. Output shape: same as input."""

    def call(self, inputs):
        return ops.cast(inputs, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape
