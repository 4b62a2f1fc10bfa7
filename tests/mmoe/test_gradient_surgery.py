"""training.gradient_surgery: pcgrad, against a NumPy PCGrad on the flattened gradients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from mmoe.gradient_surgery import project_conflicting
from mmoe.loop import Trainer
from mmoe.losses import task_loss_sums, weighted_task_losses


def _pcgrad(gradients: list[np.ndarray]) -> np.ndarray:
    """Yu et al.'s algorithm on flat vectors, tasks in order, against the others' originals."""
    total = np.zeros_like(gradients[0])
    for i, own in enumerate(gradients):
        projected = own.copy()
        for j, other in enumerate(gradients):
            if j != i and projected @ other < 0:
                projected -= projected @ other / (other @ other) * other
        total += projected
    return total


def _dense(gradient, variable) -> np.ndarray:
    if gradient is None:
        return np.zeros(variable.shape, np.float32)
    return tf.convert_to_tensor(gradient).numpy()


def _flat(gradients, variables) -> np.ndarray:
    return np.concatenate([_dense(g, v).ravel() for g, v in zip(gradients, variables)])


@pytest.mark.parametrize("tasks", [2, 3])
def test_dense_sparse_and_missing_gradients_are_projected_as_numpy_pcgrad_and_sparse_ones_stay_sparse(tasks):
    rng = np.random.default_rng(tasks)
    table, dense = tf.Variable(tf.zeros((6, 2))), tf.Variable(tf.zeros((3,)))
    tower = tf.Variable(tf.zeros((2,)))  # reached by the first task only
    variables = [table, dense, tower]
    task_gradients = []
    for t in range(tasks):
        rows = tf.IndexedSlices(tf.constant(rng.normal(size=(3, 2)), tf.float32),
                                tf.constant([1, 4, 1]), tf.constant([6, 2]))  # row 1 twice, as a batch's lookups
        own_tower = tf.constant(rng.normal(size=2), tf.float32) if t == 0 else None
        task_gradients.append([rows, tf.constant(rng.normal(size=3), tf.float32), own_tower])
    flat = [_flat(g, variables) for g in task_gradients]
    assert any(a @ b < 0 for a in flat for b in flat)  # the seeds give a conflict to project

    combined = project_conflicting(task_gradients, variables)
    assert isinstance(combined[0], tf.IndexedSlices)
    np.testing.assert_allclose(_flat(combined, variables), _pcgrad(flat), rtol=1e-5, atol=1e-6)
    if tasks == 2:  # PCGrad's guarantee: the combined step never goes against any task
        assert all(_flat(combined, variables) @ g >= -1e-6 for g in flat)


def test_gradients_that_agree_are_summed_unchanged():
    variables = [tf.Variable(tf.zeros((2,)))]
    combined = project_conflicting([[tf.constant([1.0, 2.0])], [tf.constant([0.5, 0.1])]], variables)
    np.testing.assert_allclose(combined[0].numpy(), [1.5, 2.1])


def test_the_spec_reads_gradient_surgery_and_names_a_wrong_value_by_key_path(trained_run):
    data = trained_run.spec.to_dict()
    assert spec_from_dict(data).training.gradient_surgery == "none"
    data["training"] = {**data["training"], "gradient_surgery": "pcgrad"}
    assert spec_from_dict(data).training.gradient_surgery == "pcgrad"
    data["training"]["gradient_surgery"] = "gradnorm"
    with pytest.raises(SpecError, match="training.gradient_surgery.*expected one of none, pcgrad"):
        spec_from_dict(data)


@pytest.mark.parametrize("architecture,jit_compile", [("mmoe", True), ("single_task", False)])
def test_the_loop_steps_along_pcgrad_of_the_task_gradients_plus_the_auxiliary_losses(trained_run, tmp_path,
                                                                                      architecture, jit_compile):
    spec = trained_run.spec
    spec = dataclasses.replace(
        spec, model=dataclasses.replace(spec.model, architecture=architecture, embedding_l2=1e-2),
        training=dataclasses.replace(spec.training, gradient_surgery="pcgrad", batch_size=128, jit_compile=jit_compile))
    trainer = Trainer(spec, dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model")))
    features, labels, weights = next(iter(trainer.dataset("train")))
    counts = {task.name: tf.reduce_sum(weights[task.name]) for task in spec.tasks}
    variables = trainer.variables
    _, _, gradients = trainer._loss_and_gradients(features, labels, weights, counts, variables)

    task_flat, auxiliary = [], None
    for task in spec.task_names:
        with tf.GradientTape() as tape:
            outputs = trainer.models.core(features, training=True)
            sums = task_loss_sums(spec, outputs, labels, weights)
            losses = {name: sums[name] / counts[name] for name in sums}
            term = weighted_task_losses(spec, losses, {}, 1)[task]
            penalty = tf.add_n(trainer.models.core.losses)
        task_flat.append(_flat(tape.gradient(term, variables), variables))
        auxiliary = penalty
    with tf.GradientTape() as tape:
        trainer.models.core(features, training=True)
        penalty = tf.add_n(trainer.models.core.losses)
    assert float(penalty) == pytest.approx(float(auxiliary))
    want = _pcgrad(task_flat) + _flat(tape.gradient(penalty, variables), variables)
    np.testing.assert_allclose(_flat(gradients, variables), want, rtol=1e-4, atol=1e-6)
    if architecture == "mmoe":
        assert task_flat[0] @ task_flat[1] != 0  # the tasks share variables: there was something to project
    assert np.isfinite(trainer.train_step(next(iter(trainer.dataset("train"))))["loss"])  # compiled, XLA too
