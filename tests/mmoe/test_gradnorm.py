"""training.loss_weighting: gradnorm, against GradNorm worked out in NumPy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from mmoe.gradnorm import GradNormState, logits_gradient, shared_norms
from mmoe.loop import Trainer
from task_gradients import flat, taped_task_gradients


def _numpy_logits_gradient(logits, norms, ratios, alpha) -> np.ndarray:
    """d/dlogits of sum_i |w_i n_i - mean(w n) r_i^alpha|, the target constant; w = T softmax."""
    count = len(logits)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    w = count * p
    weighted = w * norms
    target = weighted.mean() * (ratios / ratios.mean()) ** alpha
    d_weights = np.sign(weighted - target) * norms
    jacobian = count * (np.diag(p) - np.outer(p, p))  # dw_i / dlogit_j
    return jacobian.T @ d_weights


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_the_logits_gradient_is_gradnorms_on_the_softmax_weights(alpha):
    state = GradNormState(["a", "b", "c"])
    state.logits.assign([0.3, -0.2, 0.1])
    norms, ratios = np.array([2.0, 0.5, 1.0], np.float32), np.array([1.2, 0.8, 0.9], np.float32)
    got = logits_gradient(state, tf.constant(norms), tf.constant(ratios), alpha).numpy()
    np.testing.assert_allclose(got, _numpy_logits_gradient(state.logits.numpy(), norms, ratios, alpha), rtol=1e-5)
    weights = state.weights().numpy()
    assert weights.sum() == pytest.approx(3.0) and (weights > 0).all()


def test_norms_run_over_the_variables_more_than_one_task_reaches_sparse_ones_with_repeats_summed():
    variables = [tf.Variable(tf.zeros((2,))), tf.Variable(tf.zeros((4, 2))), tf.Variable(tf.zeros((3,)))]
    rows = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0]]), tf.constant([1, 1]), tf.constant([4, 2]))
    task_a = [tf.constant([1.0, 1.0]), rows, tf.constant([5.0, 5.0, 5.0])]  # the last: task a's own tower
    task_b = [tf.constant([0.0, 2.0]), tf.IndexedSlices(tf.constant([[1.0, 0.0]]), tf.constant([3]), tf.constant([4, 2])),
              None]
    norms = shared_norms([task_a, task_b], variables).numpy()
    np.testing.assert_allclose(norms, [np.sqrt(1 + 1 + 4**2 + 6**2), np.sqrt(4 + 1)], rtol=1e-6)
    own_only = shared_norms([[None, None, task_a[2]], [tf.constant([1.0, 0.0]), None, None]], variables)
    np.testing.assert_allclose(own_only.numpy(), [0.0, 0.0])


def test_the_first_step_sets_the_initial_losses_and_later_ratios_divide_by_them():
    state = GradNormState(["a", "b"])
    np.testing.assert_allclose(state.loss_ratios(tf.constant([0.6, 3.0])).numpy(), [1.0, 1.0])
    np.testing.assert_allclose(state.loss_ratios(tf.constant([0.3, 2.0])).numpy(), [0.5, 2.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(state.initial_losses.numpy(), [0.6, 3.0])


def test_the_spec_reads_gradnorm_and_alpha_and_names_a_wrong_alpha_by_key_path(trained_run):
    data = trained_run.spec.to_dict()
    assert spec_from_dict(data).training.gradnorm_alpha == 1.5
    data["training"] = {**data["training"], "loss_weighting": "gradnorm", "gradnorm_alpha": 0.5}
    training = spec_from_dict(data).training
    assert (training.loss_weighting, training.gradnorm_alpha) == ("gradnorm", 0.5)
    for bad in (-1.0, 11.0, "strong"):
        data["training"]["gradnorm_alpha"] = bad
        with pytest.raises(SpecError, match="training.gradnorm_alpha"):
            spec_from_dict(data)


def _gradnorm_trainer(trained_run, tmp_path, architecture, jit_compile=False, **training):
    spec = trained_run.spec
    spec = dataclasses.replace(
        spec, model=dataclasses.replace(spec.model, architecture=architecture, embedding_l2=1e-2),
        training=dataclasses.replace(spec.training, loss_weighting="gradnorm", batch_size=128,
                                     jit_compile=jit_compile, **training))
    return Trainer(spec, dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model")))


@pytest.mark.parametrize("architecture,jit_compile", [("mmoe", True), ("single_task", False)])
def test_the_loop_steps_along_the_weighted_task_gradients_and_the_logits_along_gradnorms(
        trained_run, tmp_path, architecture, jit_compile):
    trainer = _gradnorm_trainer(trained_run, tmp_path, architecture, jit_compile)
    spec, state = trainer.spec, trainer.gradnorm
    state.logits.assign([0.4, -0.4])
    state.initial_losses.assign([2.0, 0.5])  # as if a first step had run
    features, labels, weights = next(iter(trainer.dataset("train")))
    counts = {task.name: tf.reduce_sum(weights[task.name]) for task in spec.tasks}
    variables = trainer.variables
    model_variables = variables[:-1]
    assert variables[-1] is state.logits
    total, task_losses, gradients = trainer._loss_and_gradients(features, labels, weights, counts, variables)

    taped = taped_task_gradients(trainer, features, labels, weights, counts, model_variables)
    task_gradients, losses = taped.gradients, taped.losses
    w = state.weights().numpy()
    want = sum(wi * flat(g, model_variables) for wi, g in zip(w, task_gradients))
    want += flat(taped.penalty_gradients, model_variables)
    np.testing.assert_allclose(flat(gradients[:-1], model_variables), want, rtol=1e-4, atol=1e-6)

    flats = [flat(g, model_variables) for g in task_gradients]
    reached = [np.concatenate([np.full(int(np.prod(v.shape)), g is not None) for g, v in zip(gs, model_variables)])
               for gs in task_gradients]
    shared = reached[0] & reached[1]
    norms = np.array([np.linalg.norm(f[shared]) for f in flats])
    ratios = np.array(losses) / np.array([2.0, 0.5])
    want_logits = _numpy_logits_gradient(np.array([0.4, -0.4]), norms, ratios, spec.training.gradnorm_alpha)
    np.testing.assert_allclose(gradients[-1].numpy(), want_logits, rtol=1e-4, atol=1e-7)
    if architecture == "mmoe":
        assert norms.min() > 0 and np.abs(want_logits).max() > 0  # shared experts: something to balance
    else:
        np.testing.assert_allclose(want_logits, 0.0)  # separate towers share nothing
    assert float(total) == pytest.approx(sum(wi * float(spec.tasks[i].weight) * losses[i] for i, wi in enumerate(w))
                                         + taped.penalty, rel=1e-4)


def test_training_moves_the_weights_logs_them_and_a_resumed_run_restores_them(trained_run, tmp_path):
    trainer = _gradnorm_trainer(trained_run, tmp_path, "mmoe", epochs=1, evaluations_per_epoch=1)
    history = trainer.fit(verbose=0)
    weights = [history[f"{task}_gradnorm_weight"][-1] for task in trainer.spec.task_names]
    assert sum(weights) == pytest.approx(2.0, rel=1e-5) and weights[0] != pytest.approx(1.0, abs=1e-4)
    assert (trainer.gradnorm.initial_losses.numpy() > 0).all()
    trainer.checkpoints.save()
    resumed = _gradnorm_trainer(trained_run, tmp_path, "mmoe", epochs=1, evaluations_per_epoch=1)
    assert resumed.restore()
    np.testing.assert_allclose(resumed.gradnorm.logits.numpy(), trainer.gradnorm.logits.numpy())
    np.testing.assert_allclose(resumed.gradnorm.initial_losses.numpy(), trainer.gradnorm.initial_losses.numpy())
