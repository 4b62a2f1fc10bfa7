"""A list's ``pooling: attention`` and its ``target``: read, checked by key path, round-tripped."""

import copy

import pytest

from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from list_logs import LIST_SPEC


def spec_with(**list_block):
    data = copy.deepcopy(LIST_SPEC)
    data["features"][1]["list"] = dict(data["features"][1]["list"], **list_block)  # tags
    return data


def test_an_attention_list_names_its_target_and_round_trips():
    spec = spec_from_dict(spec_with(pooling="attention", target="user"))
    tags = spec.column("tags")
    assert (tags.list.pooling, tags.list.target) == ("attention", "user")
    assert spec_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("block,message", [
    ({"pooling": "attention"}, "needs the target feature"),
    ({"pooling": "mean", "target": "user"}, "take no target"),
    ({"pooling": "attention", "target": "nobody"}, "not another model feature"),
    ({"pooling": "attention", "target": "tags"}, "not another model feature"),
    ({"pooling": "attention", "target": "cats"}, "must be a scalar"),
    ({"pooling": "attention", "target": "price"}, "must be a scalar"),
])
def test_a_wrong_target_is_an_error_naming_the_key(block, message):
    with pytest.raises(SpecError, match=message) as error:
        spec_from_dict(spec_with(**block))
    assert "features[1].list.target" in str(error.value)
