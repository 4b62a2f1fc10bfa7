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
from task_gradients import flat, taped_task_gradients


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
    flats = [flat(g, variables) for g in task_gradients]
    assert any(a @ b < 0 for a in flats for b in flats)  # the seeds give a conflict to project

    combined = project_conflicting(task_gradients, variables)
    assert isinstance(combined[0], tf.IndexedSlices)
    np.testing.assert_allclose(flat(combined, variables), _pcgrad(flats), rtol=1e-5, atol=1e-6)
    if tasks == 2:  # PCGrad's guarantee: the combined step never goes against any task
        assert all(flat(combined, variables) @ g >= -1e-6 for g in flats)


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

    taped = taped_task_gradients(trainer, features, labels, weights, counts, variables)
    task_flat = [flat(g, variables) for g in taped.gradients]
    assert taped.penalty == pytest.approx(taped.task_penalty)
    want = _pcgrad(task_flat) + flat(taped.penalty_gradients, variables)
    np.testing.assert_allclose(flat(gradients, variables), want, rtol=1e-4, atol=1e-6)
    if architecture == "mmoe":
        assert task_flat[0] @ task_flat[1] != 0  # the tasks share variables: there was something to project
    assert np.isfinite(trainer.train_step(next(iter(trainer.dataset("train"))))["loss"])  # compiled, XLA too
