"""A task's served output may not take a column's name: metrics and responses hold both by name, and
a regression task named like its label read its own predictions back as labels (RMSE 0)."""

import copy

import pytest

from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from list_logs import LIST_SPEC


@pytest.mark.parametrize("index,name,output", [(1, "dwell", "dwell"), (1, "price", "price"),
                                               (0, "user", None)])
def test_a_served_output_named_like_a_column_is_refused(index, name, output):
    data = copy.deepcopy(LIST_SPEC)
    old = data["tasks"][index]["name"]
    data["tasks"][index]["name"] = name
    data["ranking"]["weights"] = {(name if task == old else task): w for task, w in data["ranking"]["weights"].items()}
    if output is None:  # a binary task named like a column serves user_probability: no clash
        spec_from_dict(data)
        return
    with pytest.raises(SpecError, match="rename the task") as error:
        spec_from_dict(data)
    assert f"tasks[{index}].name" in str(error.value)


def test_a_binary_tasks_output_clashes_by_its_probability_name():
    data = copy.deepcopy(LIST_SPEC)
    data["columns"].append({"name": "click_probability", "type": "float"})
    with pytest.raises(SpecError, match="click_probability"):
        spec_from_dict(data)
