"""One place for each training setting: command-line overrides, the loss table, the baselines, the model/ layout."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from feature_specs.artifacts import Workdir
from feature_specs.spec import LOSSES
from feature_specs.spec_reader import bundled_spec_path, load_spec
from mmoe.overrides import with_overrides


def test_overrides_replace_only_what_is_given():
    spec = load_spec(bundled_spec_path("clicklog"))
    epochs = spec.training.epochs
    assert with_overrides(spec) is spec
    assert with_overrides(spec, epochs=None, batch_size=0, architecture=spec.model.architecture) is spec
    changed = with_overrides(spec, epochs=epochs + 5, batch_size=32, architecture="shared_bottom")
    assert (changed.training.epochs, changed.training.batch_size, changed.model.architecture) == (epochs + 5, 32, "shared_bottom")
    assert changed.training.learning_rate == spec.training.learning_rate and changed.tasks == spec.tasks
    assert spec.training.epochs == epochs, "the spec given is left as it was"


def test_the_loss_table_covers_the_losses_a_spec_may_name():
    from mmoe.losses import LOSS_FUNCTIONS, per_example_loss

    assert set(LOSS_FUNCTIONS) == {name for names in LOSSES.values() for name in names}
    labels = np.array([[1.0], [0.0]], "float32")
    for name, loss in LOSS_FUNCTIONS.items():
        # one output unit per row, or as many as the loss reads (ziln: logit, mu, scale)
        outputs = np.tile(np.array([[0.5], [-2.0]], "float32"), (1, loss.output_units))
        per_example = np.asarray(per_example_loss(name, labels, outputs))
        assert per_example.shape == (2,), name
        assert float(loss.keras_loss()(labels, outputs)) == pytest.approx(per_example.mean(), rel=1e-5), name
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        per_example_loss("hinge", labels, labels)


def test_the_default_baselines_and_overrides_import_without_tensorflow():
    code = ("import sys; from mmoe.baselines import DEFAULT_BASELINES; import mmoe.overrides; "
            "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted(m for m in sys.modules if 'tensorflow' in m)[:5]; "
            "print(DEFAULT_BASELINES)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('single_task', 'shared_bottom')"


def test_the_model_layout_is_named_by_the_workdir():
    workdir = Workdir("gs://bucket/run")
    assert workdir.checkpoints_dir == "gs://bucket/run/model/checkpoints"
    assert workdir.checkpoint_history_json == "gs://bucket/run/model/checkpoints/history.json"
    assert workdir.best_weights == "gs://bucket/run/model/best.weights.h5"
    assert workdir.serving_weights == "gs://bucket/run/model/serving.weights.h5"
    assert workdir.report_html == "gs://bucket/run/model/report.html"
    assert workdir.gate_usage_json == "gs://bucket/run/model/gate_usage.json"
    assert workdir.gates_png == "gs://bucket/run/model/plots/gates.png"
    worker = workdir.worker(1)
    assert worker.checkpoints_dir == "gs://bucket/run/model/workers/worker-1/checkpoints"
    assert worker.split_pattern("train") == workdir.split_pattern("train"), "a worker reads the run's data"
    baseline = workdir.baseline("shared_bottom")
    assert baseline.serving_weights == "gs://bucket/run/model/baselines/shared_bottom/serving.weights.h5"
    assert baseline.statistics_json == workdir.statistics_json
