"""Adam whose embedding-table updates touch only the rows a batch looked up, and whose dense
updates run as TensorFlow's fused Adam kernel.

Keras' Adam densifies a row-sparse gradient (``tf.IndexedSlices``, what an embedding lookup's
gradient is): every step it reads and writes the whole table and both of its moment slots, so a
step's cost grows with the vocabulary rather than the batch (30-36 ms a step for one 1M x 16
table on 2 cores, more than the whole reference model's step; ``benchmarks/embedding_updates.py``). :class:`LazyAdam` updates the looked-up
rows only, as tensorflow-addons' ``LazyAdam`` and PyTorch's ``SparseAdam`` do: their moments and
weights follow Adam exactly; rows a batch does not touch keep their moments (dense Adam would
decay them and keep moving the weights on momentum). Dense gradients get Adam's own update.
Everything has static shapes, so the update compiles with XLA.

Dense gradients (every kernel and bias) go through ``ResourceApplyAdam``, the one fused kernel
that Keras 2's Adam used: Keras 3's Adam writes the same update as about ten element-wise ops,
each a pass over the variable and its slots, which costs 3.3x the fused kernel (17 against 5 ms
for the 8.5M weights of 128 experts of 256 -> 128 on 2 cores). The formula is Keras 3's:
``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``, ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) m /
(sqrt(v) + eps)``; AMSGrad keeps Keras' own update.

Both paths apply Adam to the gradient a row-sparse gradient stands for, with the repeats of a
row (a popular item, a two-valued feature) summed before squaring. Keras 3's Adam squares each
repeat's values and sums those into the second moment (``sum g_i**2``, not ``(sum g_i)**2``),
which under-estimates it for rows repeated within a batch; Keras 2 summed repeats first.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mmoe.registry import register


def unique_rows(indices: tf.Tensor, values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Sums the gradient rows of repeated indices, keeping the static shape ``n``.

    Args:
        indices: ``(n,)`` int row indices, repeats allowed.
        values: ``(n, ...)`` gradient rows.

    Returns:
        ``(rows, summed, valid)``: ``(n,)`` distinct row indices in increasing order, then 0 in
        the unused tail; ``(n, ...)`` the summed gradient of each (zeros in the tail); ``(n,)``
        bool, True for the distinct rows.
    """
    n = tf.shape(indices)[0]
    order = tf.argsort(indices, stable=True)
    sorted_indices = tf.gather(indices, order)
    starts = tf.concat([tf.ones([1], tf.bool)[:n], sorted_indices[1:] != sorted_indices[:-1]], axis=0)
    segment = tf.cumsum(tf.cast(starts, tf.int32)) - 1  # (n,) the distinct row each index sums into
    summed = tf.math.unsorted_segment_sum(tf.gather(values, order), segment, n)
    valid = tf.range(n) < tf.reduce_sum(tf.cast(starts, tf.int32))
    rows = tf.math.unsorted_segment_max(sorted_indices, segment, n)  # empty segments: the dtype's minimum
    return tf.where(valid, rows, tf.zeros_like(rows)), summed, valid


def _on_this_device(variable):
    """The ``tf.Variable`` an update made now writes: a tf.distribute variable's copy on this
    device (in ``strategy.extended.update`` the current one), else the variable itself."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    if isinstance(variable, tf.distribute.DistributedValues):
        variable = variable._get_on_device_or_primary()  # no public accessor in TF 2.21
    return variable


def read_rows(variable, rows: tf.Tensor) -> tf.Tensor:
    """``variable[rows]`` read as a gather on the resource: reading the whole variable first
    (what ``tf.gather(variable, rows)`` does) would make the next scatter into it copy the
    whole buffer in graph mode. A tf.distribute variable is read on this device's copy (what
    the update being made writes to; ``tf.gather`` on the distributed variable would read it
    whole: 8 ms instead of 0.4 for a 1M x 16 table)."""
    return _on_this_device(variable).sparse_read(rows)


@register
class LazyAdam(keras.optimizers.Adam):
    """Adam; for ``tf.IndexedSlices`` gradients of variables with at least ``min_rows`` rows,
    only the looked-up rows of the variable and of its moment slots are read and written (see
    the module docstring). Smaller tables keep Adam's dense update, which costs less below a
    few thousand rows (XLA, 2 cores, 1,024 lookups of 16-dim rows: dense 0.13 ms at 1,000 rows,
    0.54 at 10,000, 30 at 1,000,000; lazy 0.23-0.29 ms at every size).

    Args:
        min_rows: int. Tables with fewer rows get Adam's dense update; 0: every table is lazy.
        **kwargs: ``keras.optimizers.Adam``'s arguments. Same slots and checkpoints as Adam
            (TensorFlow backend).
    """

    def __init__(self, min_rows: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.min_rows = int(min_rows)

    def _lazy(self, gradient, variable) -> bool:
        if not isinstance(gradient, tf.IndexedSlices) or not variable.shape.rank:
            return False
        rows = variable.shape[0]
        return rows is not None and rows >= self.min_rows

    def update_step(self, gradient, variable, learning_rate):
        if not self._lazy(gradient, variable):
            if isinstance(gradient, tf.IndexedSlices):
                # Dense, with repeated rows summed first: Keras' Adam squares a row-sparse
                # gradient's values before summing the repeats of a row into its second moment.
                gradient = tf.convert_to_tensor(gradient)
            if self.amsgrad:
                return super().update_step(gradient, variable, learning_rate)
            return self._fused_dense_update(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]

        rows, grad, valid = unique_rows(gradient.indices, tf.cast(gradient.values, dtype))
        # Tail entries point at row 0 and add zeros, so scatter_add leaves it as it is.
        mask = tf.reshape(tf.cast(valid, dtype), [-1] + [1] * (grad.shape.rank - 1))

        def add_rows(slot, old, new):
            self.assign_add(slot, tf.IndexedSlices((new - old) * mask, rows))

        m_old, v_old = read_rows(m, rows), read_rows(v, rows)
        m_new = m_old + (grad - m_old) * (1 - beta_1)
        v_new = v_old + (tf.square(grad) - v_old) * (1 - beta_2)
        add_rows(m, m_old, m_new)
        add_rows(v, v_old, v_new)
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            hat_old = read_rows(v_hat, rows)
            v_new = tf.maximum(hat_old, v_new)
            add_rows(v_hat, hat_old, v_new)
        update = alpha * m_new / (tf.sqrt(v_new) + self.epsilon) * mask
        self.assign_sub(variable, tf.IndexedSlices(update, rows))

    def _fused_dense_update(self, gradient, variable, learning_rate):
        """Adam's dense update of ``variable`` (any shape) by ``gradient`` (its shape) in one kernel."""
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_on_this_device(variable).handle,
            m=_on_this_device(self._momentums[index]).handle,
            v=_on_this_device(self._velocities[index]).handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))

    def get_config(self):
        return {**super().get_config(), "min_rows": self.min_rows}


def make_optimizer(training) -> LazyAdam:
    """The optimizer a spec's ``training`` section asks for: Adam at ``learning_rate``, lazy on
    embedding tables of at least ``lazy_update_min_rows`` rows."""
    return LazyAdam(min_rows=training.lazy_update_min_rows, learning_rate=training.learning_rate)
