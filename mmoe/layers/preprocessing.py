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


@register
class FixedValue(keras.layers.Layer):
    """A ``(batch_size, 1)`` tensor holding ``value``, batch-sized like its input.

    Feeds the bias tower at serving, where a bias feature (e.g. position) is fixed rather than read
    from the request. Strings need TensorFlow tensors, so this layer uses ``tf.fill``.

    Args:
        value: str, int or float. The fixed value.
        dtype_name: str. ``"string"``, ``"int64"``, ``"int32"`` or ``"float32"``.

    Input shape: ``(batch_size, ...)`` (any reference input). Output shape: ``(batch_size, 1)``.
    """

    def __init__(self, value, dtype_name: str, **kwargs):
        super().__init__(**kwargs)
        if dtype_name not in ("string", "int64", "int32", "float32"):
            raise ValueError(f"`dtype_name` must be string, int64, int32 or float32, got {dtype_name!r}")
        self.value = value
        self.dtype_name = dtype_name

    def call(self, reference):
        import tensorflow as tf

        batch = tf.shape(reference)[0]
        return tf.fill(tf.stack([batch, 1]), tf.constant(self.value, dtype=tf.dtypes.as_dtype(self.dtype_name)))

    def compute_output_spec(self, reference):
        return keras.KerasTensor((reference.shape[0], 1), dtype=self.dtype_name)

    def get_config(self):
        return {**super().get_config(), "value": self.value, "dtype_name": self.dtype_name}
