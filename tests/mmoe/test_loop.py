"""The custom training loop: masked losses, uncertainty weighting, eval AUC, early stopping."""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from feature_specs.spec import EarlyStopping, SpecError, TrainingConfig
from feature_specs.spec_reader import bundled_spec_path, spec_from_dict
from mmoe.baselines import train_baseline
from mmoe.input_pipeline import example_bytes, pad_rows
from mmoe.loop import Trainer
from mmoe.losses import per_example_loss
from mmoe.metrics import exact_auc
from mmoe.report import metric_table
from mmoe.validation import histogram_auc


def _trainer(trained_run, tmp_path, **training):
    """A Trainer on the session run's data that writes (checkpoints, best weights) under ``tmp_path``."""
    spec = trained_run.spec
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, **{"batch_size": 256, **training}))
    return Trainer(spec, dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model")))


def test_histogram_auc_matches_the_exact_auc():
    rng = np.random.default_rng(0)
    labels = rng.random(5000) < 0.3
    scores = 1 / (1 + np.exp(-(labels * 1.2 + rng.normal(size=5000))))
    bins = np.clip((scores * 2000).astype(int), 0, 1999)
    positives = np.bincount(bins[labels], minlength=2000)
    negatives = np.bincount(bins[~labels], minlength=2000)
    assert histogram_auc(positives, negatives) == pytest.approx(exact_auc(labels, scores), abs=1e-3)
    assert np.isnan(histogram_auc(positives, np.zeros(2000)))


def test_pad_rows_fills_a_partial_batch_with_zero_rows_to_a_static_shape():
    batch = ({"user_id": tf.constant([[3], [5]], tf.int64), "price": tf.constant([[1.5], [2.0]])},
             {"click": tf.constant([[1.0], [0.0]])}, {"click": tf.constant([1.0, 1.0])})

    padded = tf.function(lambda b: pad_rows(b, 4), input_signature=[tf.nest.map_structure(
        lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), batch)])(batch)

    features, labels, weights = padded
    assert features["user_id"].shape == (4, 1) and weights["click"].shape == (4,)
    np.testing.assert_array_equal(features["user_id"][:, 0], [3, 5, 0, 0])
    np.testing.assert_array_equal(labels["click"][:, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(weights["click"], [1, 1, 0, 0])  # padded rows weigh nothing
    np.testing.assert_array_equal(pad_rows({"w": tf.zeros((0,))}, 3)["w"], [0, 0, 0])  # an empty batch
    with pytest.raises(tf.errors.InvalidArgumentError, match="a batch has more than 1 rows"):
        pad_rows(weights, 1)


def test_masked_task_loss_is_the_mean_over_observed_rows(trained_run, tmp_path):
    trainer = _trainer(trained_run, tmp_path)
    features, labels, weights = batch = next(iter(trainer.dataset("train")))
    outputs = trainer.models.core(features, training=False)
    mask = weights["engagement"].numpy()
    assert 0 < mask.sum() < len(mask), "the batch has clicked and unclicked rows"
    engagement = per_example_loss(trainer.spec.task("engagement").loss, labels["engagement"],
                                  outputs["engagement"]).numpy()  # the spec's loss (clicklog: ziln)
    click = per_example_loss("binary_crossentropy", labels["click"], outputs["click"]).numpy()

    logs = trainer.train_step(batch)
    assert logs["engagement_loss"] == pytest.approx((engagement * mask).sum() / mask.sum(), rel=1e-4)
    assert logs["click_loss"] == pytest.approx(click.mean(), rel=1e-4)
    weight = {task.name: task.weight for task in trainer.spec.tasks}
    assert logs["loss"] == pytest.approx(
        weight["click"] * logs["click_loss"] + weight["engagement"] * logs["engagement_loss"], rel=1e-4
    )
    assert int(trainer.step) == 1


def test_uncertainty_weighting_learns_one_log_variance_per_task(trained_run, tmp_path):
    trainer = _trainer(trained_run, tmp_path, loss_weighting="uncertainty")
    assert set(trainer.log_variances) == {"click", "engagement"}
    assert len(trainer.variables) == len(trainer.models.core.trainable_variables) + 2
    batches = iter(trainer.dataset("train"))
    before = {task: float(v.numpy()) for task, v in trainer.log_variances.items()}
    logs = trainer.train_step(next(batches))
    # Kendall et al.: exp(-s) L + s/2 (binary), exp(-s) L / 2 + s/2 (regression); s = 0 at the start
    weight = {task.name: task.weight for task in trainer.spec.tasks}
    expected = weight["click"] * logs["click_loss"] * np.exp(-before["click"]) + weight[
        "engagement"
    ] * 0.5 * logs["engagement_loss"] * np.exp(-before["engagement"])
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    for batch in [next(batches) for _ in range(3)]:
        trainer.train_step(batch)
    assert all(float(v.numpy()) != before[task] for task, v in trainer.log_variances.items())


def test_eval_metrics_name_each_task(trained_run, tmp_path):
    trainer = _trainer(trained_run, tmp_path)
    logs = trainer.evaluate()
    assert set(logs) == {"val_click_loss", "val_click_auc", "val_engagement_loss", "val_loss"}
    assert 0.0 <= logs["val_click_auc"] <= 1.0
    weight = {task.name: task.weight for task in trainer.spec.tasks}
    assert logs["val_loss"] == pytest.approx(
        weight["click"] * logs["val_click_loss"] + weight["engagement"] * logs["val_engagement_loss"]
    )


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(trained_run, tmp_path):
    trainer = _trainer(trained_run, tmp_path, early_stopping=EarlyStopping(metric="val_click_auc", patience=2))
    stops = [trainer._end_epoch(epoch, {"val_click_auc": auc}) for epoch, auc in enumerate([0.60, 0.70, 0.65, 0.69])]
    assert stops == [False, False, False, True]
    assert int(trainer.best_epoch) == 1 and float(trainer.best_value.numpy()) == pytest.approx(0.70)
    assert os.path.exists(trainer.outputs.best_weights) and trainer.outputs.model_dir == str(tmp_path / "model")


def test_early_stopping_metric_direction():
    assert EarlyStopping(metric="val_click_auc").mode == "max"
    assert EarlyStopping(metric="val_loss").mode == "min"
    assert per_example_loss("huber", np.zeros((2, 1), "float32"), np.ones((2, 1), "float32")).shape == (2,)


def test_a_baseline_trains_on_the_same_data_and_lands_in_the_report_table(trained_run, tmp_path):
    spec = dataclasses.replace(trained_run.spec, training=dataclasses.replace(trained_run.spec.training, epochs=1))
    workdir = dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model"))
    metrics = train_baseline(spec, workdir, "shared_bottom", verbose=0)
    assert metrics["click"]["examples"] == trained_run.report["written"]["eval"]
    assert 0.0 <= metrics["click"]["auc"] <= 1.0 and "mrr" in metrics["ranking"]
    assert os.path.exists(tmp_path / "model" / "baselines" / "shared_bottom" / "best.weights.h5")

    table = metric_table(spec, {"mmoe (this run)": trained_run.result.metrics, "shared_bottom": metrics})
    assert "<th>click AUC</th>" in table and "<th>engagement RMSE (seconds)</th>" in table and "<th>MRR</th>" in table
    assert f"<td>{metrics['click']['auc']:.4f}</td>" in table
    assert f"<td>{trained_run.result.metrics['ranking']['ndcg@10']:.4f}</td>" in table


def test_the_run_report_embeds_plots_metrics_and_configuration(trained_run):
    with open(trained_run.workdir.report_html) as handle:
        page = handle.read()
    assert page.count("data:image/png;base64,") == 3
    assert "Eval metrics" in page and "val_click_auc" in page and "&quot;architecture&quot;: &quot;mmoe&quot;" in page
    training = trained_run.result.metrics["training"]
    assert f"Kept the model of epoch {training['best_epoch']} of 2 (step {training['best_step']})" in page


def test_an_xla_compiled_step_matches_the_plain_one(trained_run, tmp_path):
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(7)
        trainer = _trainer(trained_run, tmp_path / str(jit), jit_compile=jit, batch_size=128)
        batch = next(iter(trainer.dataset("eval")))
        logs = trainer.train_step(batch)
        results.append((logs, [v.numpy() for v in trainer.models.core.trainable_variables]))
        if jit:  # the update is its own XLA cluster, compiled once
            trainer.train_step(batch)
            assert trainer._apply_update.experimental_get_tracing_count() == 1
    (plain_logs, plain_weights), (jit_logs, jit_weights) = results
    for key in plain_logs:
        assert jit_logs[key] == pytest.approx(plain_logs[key], rel=1e-5), key
    for plain, compiled in zip(plain_weights, jit_weights):
        np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-6)


def test_cached_input_keeps_the_batches_and_reshuffles_their_order(trained_run, tmp_path):
    trainer = _trainer(trained_run, tmp_path, cache=True)

    def first_column(epoch):
        return [batch[0]["user_id"].numpy()[:, 0].tolist() for batch in trainer.dataset("train", epoch)]

    epoch0, again, epoch1 = first_column(0), first_column(0), first_column(1)
    assert epoch0 == again, "an epoch's order is a function of the seed and the epoch"
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    assert trainer.input.cached_train is not None
    resumed = [batch[0]["user_id"].numpy()[:, 0].tolist() for batch in trainer.dataset("train", 1, skip_batches=1)]
    assert resumed == epoch1[1:], "a resumed epoch skips the batches already trained on"


def test_a_train_split_too_large_for_memory_is_read_every_epoch_instead_of_cached(trained_run, tmp_path,
                                                                                   monkeypatch, caplog):
    trainer = _trainer(trained_run, tmp_path, cache=True)
    per_example = example_bytes(trainer.dataset("train", cache=False).element_spec)
    rows = trained_run.report["written"]["train"]
    # 13 columns here: int64 ids, float32 values, labels and weights
    assert 4 * 13 <= per_example <= 8 * 13 + 16

    monkeypatch.setattr("mmoe.input_pipeline.available_memory_bytes", lambda: int(rows * per_example * 1.9))
    with caplog.at_level("WARNING", logger="mmoe.input_pipeline"):
        batches = [b[0]["user_id"].numpy()[:, 0].tolist() for b in trainer.dataset("train", 0)]
    assert trainer.input.cached_train is None
    assert f"the {rows:,} train rows would take" in caplog.text and "reads the TFRecords every epoch" in caplog.text
    uncached = [b[0]["user_id"].numpy()[:, 0].tolist() for b in trainer.dataset("train", 0, cache=False)]
    assert batches == uncached

    roomy = _trainer(trained_run, tmp_path / "roomy", cache=True)
    monkeypatch.setattr("mmoe.input_pipeline.available_memory_bytes", lambda: int(rows * per_example * 2.1))
    roomy.dataset("train", 0)
    assert roomy.input.cached_train is not None


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_lazy_embedding_updates_leave_the_rows_a_batch_did_not_look_up(trained_run, tmp_path, jit):
    trainer = _trainer(trained_run, tmp_path, lazy_update_min_rows=0, jit_compile=jit)
    table = next(v for v in trainer.models.core.trainable_variables if v.path == "user_id_embedding/embeddings")
    batches = iter(trainer.dataset("train"))
    trainer.train_step(next(batches))  # every looked-up row has moments now
    batch = next(batches)
    before = np.array(table)
    logs = trainer.train_step(batch)

    looked_up = np.unique(batch[0]["user_id"].numpy())
    others = np.setdiff1d(np.arange(before.shape[0]), looked_up)
    changed = np.any(np.array(table) != before, axis=1)
    assert np.isfinite(logs["loss"])
    assert not changed[others].any(), "rows the batch did not look up keep their weights"
    assert changed[looked_up].mean() > 0.9


def test_clearing_checkpoints_means_a_fresh_start(trained_run, tmp_path):
    first = _trainer(trained_run, tmp_path)
    first.train_step(next(iter(first.dataset("train"))))
    first.checkpoints.save()
    second = _trainer(trained_run, tmp_path)  # sees the checkpoint: it would resume
    assert second.checkpoints.manager.latest_checkpoint is not None
    second.clear_checkpoints()  # what `mmoe train --fresh` does
    assert not second.restore() and int(second.step) == 0


def test_eval_runs_several_batches_per_call_with_the_same_metrics(trained_run, tmp_path):
    batches = len(list(_trainer(trained_run, tmp_path / "count").dataset("eval")))
    assert batches >= 3, "the eval split should span more than one call of 2 batches"
    logs = {}
    for per_call in (1, 2, 8):
        keras.utils.set_random_seed(7)  # the same initial weights
        trainer = _trainer(trained_run, tmp_path / str(per_call), steps_per_execution=per_call)
        calls = list(trainer.validation.sums())
        assert len(calls) == (batches if per_call == 1 else -(-batches // per_call)), per_call
        logs[per_call] = trainer.evaluate()
    for per_call in (2, 8):
        assert logs[per_call] == pytest.approx(logs[1], rel=1e-5), per_call


def test_several_steps_in_one_call_match_one_step_per_call(trained_run, tmp_path):
    results = []
    for several in (False, True):
        keras.utils.set_random_seed(7)
        trainer = _trainer(trained_run, tmp_path / str(several))
        batches = trainer.dataset("eval").take(3)  # a fixed order
        if several:
            iterator = iter(batches)
            done, sums = trainer.train_steps(iterator, 8)
            assert done == 3, "the iterator ran out after 3 of the 8 steps asked for"
            assert trainer.train_steps(iterator, 8) == (0, {key: 0.0 for key in sums})
        else:
            steps = [trainer.train_step(batch) for batch in batches]
            done, sums = len(steps), {key: sum(step[key] for step in steps) for key in steps[0]}
        assert int(trainer.step) == 3
        results.append((sums, [v.numpy() for v in trainer.models.core.trainable_variables]))
    (single_sums, single_weights), (looped_sums, looped_weights) = results
    assert set(looped_sums) == {"loss", "click_loss", "engagement_loss"}
    for key in single_sums:
        assert looped_sums[key] == pytest.approx(single_sums[key], rel=1e-5), key
    for single, looped in zip(single_weights, looped_weights):
        np.testing.assert_allclose(looped, single, rtol=1e-4, atol=1e-6)


def test_checkpoints_land_on_their_steps_when_a_call_runs_several(trained_run, tmp_path):
    spec = trained_run.spec
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, checkpoint_every_steps=5, steps_per_execution=4))
    workdir = dataclasses.replace(trained_run.workdir, model_root=str(tmp_path / "model"))  # not the session's run
    trainer = Trainer(spec, workdir)
    history = trainer.fit(epochs=1, verbose=0)
    steps = int(trainer.step)
    assert steps == len(list(trainer.dataset("train"))) and len(history["loss"]) == 1
    saved = sorted(int(path.rsplit("-", 1)[1]) for path in trainer.checkpoints.manager.checkpoints)
    assert saved[-1] == steps, "and one at the epoch's end"
    assert saved[:-1] and all(step % 5 == 0 for step in saved[:-1]), saved


def test_evaluations_inside_an_epoch_can_keep_the_best_model_between_epoch_ends(trained_run, tmp_path):
    trainer = _trainer(trained_run, tmp_path, evaluations_per_epoch=3, steps_per_execution=4, checkpoint_every_steps=0,
                       early_stopping=EarlyStopping(metric="val_loss"))
    steps_per_epoch = -(-trainer.input.train_rows() // 256)
    interval = max(4, -(-steps_per_epoch // 3))  # at least steps_per_execution
    assert trainer.evaluation_interval(None) == interval and 2 * interval < steps_per_epoch
    seen, values = [], iter([0.5, 0.3, 0.4])  # the second pass, inside the epoch, is the best

    def evaluate():
        seen.append((int(trainer.step), [w.numpy().copy() for w in trainer.models.core.weights]))
        return {"val_loss": next(values)}

    trainer.evaluate = evaluate
    history = trainer.fit(epochs=1, verbose=0)
    assert [step for step, _ in seen] == [interval, 2 * interval, steps_per_epoch]
    assert int(trainer.best_step) == 2 * interval and int(trainer.best_epoch) == 0
    assert history["val_loss"] == [0.4], "the epoch's history holds its end-of-epoch pass"
    for kept, restored in zip(seen[1][1], trainer.models.core.weights):
        np.testing.assert_array_equal(restored.numpy(), kept)


def test_the_spec_reads_evaluations_per_epoch_and_refuses_zero_by_its_key_path():
    with open(bundled_spec_path("clicklog")) as handle:
        data = yaml.safe_load(handle)
    assert spec_from_dict(data).training.evaluations_per_epoch == TrainingConfig().evaluations_per_epoch
    data["training"] = {**data.get("training", {}), "evaluations_per_epoch": 2}
    spec = spec_from_dict(data)
    assert spec.training.evaluations_per_epoch == 2 and spec_from_dict(spec.to_dict()) == spec
    data["training"]["evaluations_per_epoch"] = 0
    with pytest.raises(SpecError, match="training.evaluations_per_epoch: must be >= 1, got 0"):
        spec_from_dict(data)
