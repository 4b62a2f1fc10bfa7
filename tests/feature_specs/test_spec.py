"""The spec loader: the bundled specs load, and every kind of mistake names its key path."""

import copy

import pytest
import yaml

from feature_specs.spec import SpecError
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict


@pytest.fixture()
def clicklog_dict():
    with open(bundled_spec_path("clicklog"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_clicklog_loads_with_its_tasks_and_roles():
    spec = load_spec(bundled_spec_path("clicklog"))
    assert spec.task_names == ("click", "engagement")
    assert [f.name for f in spec.bias_features] == ["position"]
    assert spec.task("engagement").mask == "clicked"
    assert (spec.task("engagement").loss, spec.task("engagement").label_transform) == ("ziln", "none")
    assert spec.ranking.group_by == "request_id"
    assert "position" not in [f.name for f in spec.model_features]


def test_to_dict_round_trips_even_a_task_named_dtype(clicklog_dict):
    data = copy.deepcopy(clicklog_dict)
    data["tasks"][0]["name"] = "dtype"
    data["ranking"]["weights"] = {"dtype": 1.0, "engagement": 1.0}
    data["training"]["early_stopping"]["metric"] = "val_dtype_auc"
    spec = spec_from_dict(data)
    assert spec_from_dict(spec.to_dict()) == spec


def test_training_section_names_loss_weighting_checkpoints_and_early_stopping(clicklog_dict):
    data = copy.deepcopy(clicklog_dict)
    assert spec_from_dict(data).training.steps_per_execution == 8
    data["training"].update(loss_weighting="uncertainty", checkpoint_every_steps=0, jit_compile=True, steps_per_execution=1)
    training = spec_from_dict(data).training
    assert (training.loss_weighting, training.checkpoint_every_steps, training.jit_compile) == ("uncertainty", 0, True)
    assert training.steps_per_execution == 1
    assert training.early_stopping.metric == "val_click_auc" and training.early_stopping.mode == "max"
    data["training"]["steps_per_execution"] = 0
    assert "training.steps_per_execution: must be >= 1, got 0" in _error(data)
    data["training"]["steps_per_execution"] = 8
    assert spec_from_dict(data).training.lazy_update_min_rows == 10_000
    data["training"]["lazy_update_min_rows"] = 0
    assert spec_from_dict(data).training.lazy_update_min_rows == 0
    data["training"]["lazy_update_min_rows"] = -1
    assert "training.lazy_update_min_rows: must be >= 0, got -1" in _error(data)
    del data["training"]["lazy_update_min_rows"]
    data["training"]["early_stopping"] = {"metric": "val_engagement_auc"}
    assert "training.early_stopping.metric: unknown value 'val_engagement_auc'" in _error(data)
    data["training"]["early_stopping"] = {"metric": "val_loss", "patience": -1}
    assert "training.early_stopping.patience" in _error(data)
    data["training"]["early_stopping"] = {}
    data["training"]["loss_weighting"] = "dwa"
    assert "training.loss_weighting: unknown value 'dwa'" in _error(data)


def test_to_dict_round_trips(clicklog_dict):
    spec = spec_from_dict(clicklog_dict)
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec_from_dict(yaml.safe_load(spec.to_json())) == spec


def _error(data) -> str:
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, source="my.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["features"][0].update(type="blob"), "my.yaml: features[0].type: unknown value 'blob'"),
        (lambda d: d["features"][2].update(transform="bucket"), "features[2].transform: unknown value 'bucket'"),
        (lambda d: d["features"][6].update(transform="vocabulary"), "features[6].transform: unknown value 'vocabulary'"),
        (lambda d: d["tasks"][0].update(label="clicks"), "tasks[0].label: label column 'clicks' is not declared"),
        (lambda d: d["tasks"][1].update(mask="clickd"), "tasks[1].mask: mask column 'clickd' is not declared"),
        (lambda d: d["features"].append(dict(d["features"][0])), "features[9].name: duplicate name 'user_id' (first declared at features[0].name)"),
        (lambda d: d["columns"].append({"name": "item_id", "type": "string"}), "columns[4].name: duplicate name 'item_id'"),
        (lambda d: d["tasks"].append(dict(d["tasks"][0])), "tasks[2].name: duplicate name 'click'"),
        (lambda d: d["features"][0].update(embeding_dim=4), "features[0].embeding_dim: unknown key"),
        (lambda d: d["features"][0].update(embedding_dim=0), "features[0].embedding_dim: must be >= 1, got 0"),
        (lambda d: d["features"][0].update(embedding_dim="big"), "features[0].embedding_dim: expected an integer, got str 'big'"),
        (lambda d: d["features"][7].update(num_buckets=1), "features[7].num_buckets: quantile needs num_buckets >= 2"),
        (lambda d: d["features"][5].update(required=False, default=None), "features[5].default: a column with required: false needs a default"),
        (lambda d: d["features"][0].update(min=0), "features[0].min: bounds apply to numeric columns"),
        (lambda d: d["features"][5].update(default=500), "features[5].default: default 500 is outside [min, max] = [0.0, 120.0]"),
        (lambda d: d["tasks"][0].update(kind="ordinal"), "tasks[0].kind: unknown value 'ordinal'"),
        (lambda d: d["tasks"][0].update(label_transform="log1p"), "tasks[0].label_transform: binary tasks take their label as 0/1"),
        (lambda d: d["tasks"][1].update(loss="binary_crossentropy"), "tasks[1].loss: unknown value 'binary_crossentropy'"),
        (lambda d: d["ranking"]["weights"].update(ctr=1.0), "ranking.weights.ctr: unknown task 'ctr'"),
        (lambda d: d["ranking"].update(group_by="session"), "ranking.group_by: column 'session' is not declared"),
        (lambda d: d["split"].update(eval_fraction=1.5), "split.eval_fraction: must be in (0, 1), got 1.5"),
        (lambda d: d["split"].update(method="timestamp", key="timestamp"), "split.cutoff: a timestamp split needs a cutoff"),
        (lambda d: d["model"].update(expert_units=[64, -1]), "model.expert_units[1]: expected a positive integer, got -1"),
        (lambda d: d.pop("tasks"), "tasks: at least one task is required"),
        (lambda d: d.pop("split"), "split: required section is missing"),
        (lambda d: d.update(extra=1), "extra: unknown key"),
        (lambda d: d["features"][8].pop("serving_value"), "features[8].serving_value: a bias feature needs the value"),
        (lambda d: d["features"][8].update(serving_value="top"), "features[8].serving_value: expected an integer for type int, got 'top'"),
        (lambda d: d["features"][0].update(serving_value="u1"), "features[0].serving_value: only features with role: bias"),
    ],
)
def test_errors_name_the_offending_key(clicklog_dict, mutate, expected):
    data = copy.deepcopy(clicklog_dict)
    mutate(data)
    assert expected in _error(data)


def test_label_cannot_be_a_model_feature(clicklog_dict):
    data = copy.deepcopy(clicklog_dict)
    data["features"].append({"name": "clicked", "type": "int", "transform": "vocabulary"})
    data["columns"] = [c for c in data["columns"] if c["name"] != "clicked"]
    assert "features[9].name: 'clicked' is a task label" in _error(data)


def test_load_spec_reports_file_and_yaml_problems(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="broken.yaml: <yaml>: not valid YAML"):
        load_spec(str(broken))
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(str(tmp_path / "missing.yaml"))
