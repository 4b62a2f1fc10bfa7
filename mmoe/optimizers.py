"""Adam whose per-variable update is TensorFlow's fused ``ResourceApplyAdam`` kernel.

Keras 3's ``Adam.update_step`` is written in ``keras.ops``: about ten elementwise ops per
variable, each a separate TensorFlow kernel that reads and writes the whole variable. At the
training reference size (``benchmarks/train.py``: 673k parameters, batch 1024, 2 CPU cores) that
update took 8-10 ms of a 40 ms step. ``ResourceApplyAdam`` does the same arithmetic in one pass
over ``(var, m, v, grad)``; the step is 2-4 ms faster (``benchmarks/results/train.md``).

The update is Adam as Keras defines it, to float32 rounding (``tests/mmoe/test_optimizers.py``)::

    m <- beta_1 m + (1 - beta_1) g
    v <- beta_2 v + (1 - beta_2) g^2
    var <- var - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

with ``t = iterations + 1``. Its slots are Keras Adam's (``momentum``, ``velocity``), so
checkpoints of either optimizer restore into the other. ``amsgrad``, other backends and a
variable whose dtype the kernel does not take fall back to Keras' own update.
"""

from __future__ import annotations

import keras

from mmoe.registry import register

_FUSED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (the local copy under a strategy)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


@register
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with a one-kernel update per variable on TensorFlow.

    Takes the arguments of ``keras.optimizers.Adam``. Gradients may be dense or
    ``tf.IndexedSlices`` (embedding tables); slices are summed into a dense gradient first,
    as Keras' own Adam does implicitly, so untouched rows still decay their moments.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or keras.backend.backend() != "tensorflow" or str(variable.dtype) not in _FUSED_DTYPES:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        gradient = tf.cast(tf.convert_to_tensor(gradient), dtype)  # IndexedSlices -> dense (segment sum)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=gradient,
            use_locking=False,
        )
