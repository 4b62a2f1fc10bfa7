"""GradNorm (Chen et al., ICML 2018): task weights learned so that the tasks train at similar rates.

Each task ``i`` has a weight ``w_i`` in the total ``sum_i w_i L_i``. Its gradient norm on the
shared weights, ``G_i = w_i |grad_W L_i|``, is pulled towards ``mean_j G_j * r_i ** alpha``, where
``r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))`` is the task's inverse training rate (a task whose
loss fell least gets a larger gradient). The weights are ``w = T * softmax(logits)``: positive and
summing to the number of tasks ``T``, the renormalization the paper does after every step. The
logits are trained with the model's optimizer on the gradient of GradNorm's loss
``sum_i |G_i - target_i|`` (the target held constant, as in the paper), while the model's
variables get ``sum_i w_i grad L_i`` (the weights held constant).

The shared weights ``W`` are every variable that more than one task's loss reaches (experts,
shared bottom, shared embeddings), the paper's "full" variant rather than its cheaper last shared
layer. A model without such variables (``single_task``) has ``G_i = 0`` for every task: nothing to
balance, and the weights stay 1. ``L_i(0)`` is the task's loss at the first step (kept in
:attr:`GradNormState.initial_losses`, checkpointed with the weights).
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from mmoe.gradient_surgery import Gradient, densified


class GradNormState:
    """The learned logits and the first step's losses, one entry per task in ``task_names`` order.

    Args:
        task_names: the spec's tasks, in order.

    Attributes:
        logits: ``(T,)`` trainable; ``weights()`` is ``T * softmax(logits)``.
        initial_losses: ``(T,)`` the task losses of the first step (0 before it).
    """

    def __init__(self, task_names: Sequence[str]):
        self.task_names = tuple(task_names)
        count = len(self.task_names)
        self.logits = keras.Variable(tf.zeros((count,)), name="gradnorm_logits")
        # Under a tf.distribute strategy each replica's step writes it; the first replica's value is kept.
        self.initial_losses = tf.Variable(tf.zeros((count,)), trainable=False, name="gradnorm_initial_losses",
                                          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def weights(self) -> tf.Tensor:
        """``(T,)`` ``T * softmax(logits)``."""
        return len(self.task_names) * tf.nn.softmax(self.logits.value)

    def checkpointed(self) -> dict:
        """The variables a checkpoint saves (``tf.train.Checkpoint`` keywords)."""
        return {"logits": self.logits, "initial_losses": self.initial_losses}

    def loss_ratios(self, losses: tf.Tensor) -> tf.Tensor:
        """``(T,)`` ``L_i / L_i(0)`` for the ``(T,)`` ``losses`` of this step; the first step sets
        ``L_i(0)`` (ratios 1)."""
        unset = self.initial_losses <= 0.0
        self.initial_losses.assign(tf.where(unset, tf.stop_gradient(losses), self.initial_losses))
        return losses / tf.maximum(self.initial_losses, 1e-12)


def shared_norms(task_gradients: Sequence[Sequence[Gradient]], variables) -> tf.Tensor:
    """``(T,)`` each task's gradient norm over the variables that more than one task reaches.

    Args:
        task_gradients: ``T`` lists, one gradient per variable of ``variables`` (None where the
            task's loss does not reach it; embedding gradients as ``tf.IndexedSlices``).
        variables: the variables, for the shapes of sparse gradients.
    """
    shared = [v for v in range(len(variables)) if sum(g[v] is not None for g in task_gradients) > 1]
    norms = []
    for gradients in task_gradients:
        squares = [tf.reduce_sum(tf.square(densified(gradients[v], variables[v]))) for v in shared
                   if gradients[v] is not None]
        norms.append(tf.sqrt(tf.add_n(squares)) if squares else tf.constant(0.0))
    return tf.stack(norms)


def logits_gradient(state: GradNormState, norms: tf.Tensor, loss_ratios: tf.Tensor, alpha: float) -> tf.Tensor:
    """``(T,)`` the gradient of GradNorm's loss ``sum_i |w_i n_i - mean(w n) r_i^alpha|`` on the
    logits, the target (``mean(w n) r_i^alpha``) held constant.

    Args:
        state: GradNormState (its logits give ``w``).
        norms: ``(T,)`` ``n_i = |grad_W L_i|`` of the unweighted task losses (:func:`shared_norms`).
        loss_ratios: ``(T,)`` ``L_i / L_i(0)``.
        alpha: float >= 0. How hard slow tasks are pushed (0: equal gradient norms).
    """
    rates = loss_ratios / tf.reduce_mean(loss_ratios)
    norms = tf.stop_gradient(norms)
    with tf.GradientTape() as tape:
        weighted = state.weights() * norms
        target = tf.stop_gradient(tf.reduce_mean(weighted) * rates ** alpha)
        loss = tf.reduce_sum(tf.abs(weighted - target))
    return tape.gradient(loss, state.logits)
