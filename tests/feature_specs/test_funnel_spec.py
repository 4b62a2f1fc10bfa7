"""Spec keys of the heads: mean losses, funnels (tasks[].after + head), ranking.user_key."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from feature_specs.spec import SpecError
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict


def _data(name):
    with open(bundled_spec_path(name)) as handle:
        return yaml.safe_load(handle)


def _error(data) -> str:
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, source="my.yaml")
    return str(info.value)


def _task(data, name):
    return next(t for t in data["tasks"] if t["name"] == name)


def test_funnel_spec_loads_and_round_trips():
    spec = load_spec(bundled_spec_path("funnel"))
    conversion = spec.task("conversion")
    assert (conversion.after, conversion.head, conversion.mask) == ("click", "esmm", None)
    assert spec.task("click").head == "tower" and spec.ranking.user_key == "user_id"
    assert spec_from_dict(spec.to_dict()) == spec
    aitm = _data("funnel")
    _task(aitm, "conversion").update(head="aitm", calibration_weight=0.3)
    loaded = spec_from_dict(aitm)
    assert loaded.task("conversion").calibration_weight == 0.3 and spec_from_dict(loaded.to_dict()) == loaded


def test_mean_loss_spec_round_trips():
    data = _data("clicklog")
    engagement = _task(data, "engagement")
    engagement.update(loss="tweedie")
    engagement.pop("label_transform", None)
    spec = spec_from_dict(data)
    assert spec.task("engagement").loss == "tweedie" and spec_from_dict(spec.to_dict()) == spec


def _funnel(**changes):
    data = _data("funnel")
    _task(data, "conversion").update(changes)
    return data


@pytest.mark.parametrize("data,expected", [
    (_funnel(head="tower"), r"tasks\[1\]\.head: a task with after: click needs a funnel head: esmm or aitm"),
    (_funnel(after=None), r"tasks\[1\]\.after: head esmm needs the earlier task this one follows"),
    (_funnel(after="conversion"), r"tasks\[1\]\.after: 'conversion' is this task"),
    (_funnel(after="purchase"), r"tasks\[1\]\.after: 'purchase' is not a task declared before this one"),
    (_funnel(mask="click"), r"tasks\[1\]\.mask: a funnel learns every task of it over all impressions"),
    (_funnel(head="ziln"), r"tasks\[1\]\.head: unknown value 'ziln'"),
    (_funnel(calibration_weight=0.2), r"tasks\[1\]\.calibration_weight: only head: aitm has a calibration loss"),
    (_funnel(head="aitm", calibration_weight=-1.0), r"tasks\[1\]\.calibration_weight: must be >= 0"),
])
def test_funnel_errors_name_the_key(data, expected):
    message = _error(data)
    assert re.search(expected, message), message


def test_funnel_needs_binary_tasks_and_an_unmasked_earlier_task():
    data = _data("clicklog")
    _task(data, "engagement").update(after="click", head="esmm", mask=None)
    assert "tasks[1].after: a funnel joins binary tasks; engagement is regression" in _error(data)
    data = _funnel()
    _task(data, "click")["mask"] = "conversion"
    assert "tasks[1].after: a funnel learns every task of it over all impressions; task 'click' is masked" in _error(data)


def test_mean_losses_need_an_untransformed_non_negative_label():
    data = _data("clicklog")
    _task(data, "engagement").update(loss="tweedie", label_transform="log1p")
    assert "tasks[1].label_transform: loss tweedie predicts the mean in the label's original units" in _error(data)
    data = copy.deepcopy(data)
    del _task(data, "engagement")["label_transform"]
    next(c for c in data["columns"] if c["name"] == "dwell_seconds").pop("min")
    assert ("tasks[1].label: loss tweedie needs a non-negative label: declare column 'dwell_seconds' with min: 0"
            in _error(data))


def test_user_key_must_be_a_declared_column():
    data = _data("clicklog")
    data["ranking"]["user_key"] = "visitor"
    assert "ranking.user_key: column 'visitor' is not declared" in _error(data)
