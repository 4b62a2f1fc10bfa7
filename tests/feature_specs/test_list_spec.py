"""The spec's list: block (reader, defaults, errors by key path) and the list value rules."""

import copy

import pytest

from feature_specs.spec import Column, ListSpec, SpecError, field_default
from feature_specs.spec_reader import spec_from_dict
from feature_specs.values import OUT_OF_RANGE, TOO_LONG, WRONG_TYPE, InvalidValue, typed_list
from list_logs import LIST_SPEC


def with_feature(index, **changes):
    data = copy.deepcopy(LIST_SPEC)
    data["features"][index].update(changes)
    return data


def test_list_block_defaults_come_from_the_dataclass_and_round_trip():
    data = copy.deepcopy(LIST_SPEC)
    data["features"][1]["list"] = {}
    spec = spec_from_dict(data)
    tags = spec.column("tags")
    assert tags.list == ListSpec() and tags.is_list and not tags.is_numeric
    assert tags.list.max_length == field_default(ListSpec, "max_length")
    assert spec.column("cats").list == ListSpec(separator=";", max_length=3, too_long="reject", pooling="sum")
    assert spec_from_dict(spec.to_dict()) == spec
    assert "list" not in spec.to_dict()["features"][0], "a scalar column has no list block"


@pytest.mark.parametrize("index,changes,path,message", [
    (3, {"list": {}}, "features[3].type", "list elements are string or int"),
    (1, {"transform": "zscore"}, "features[1].transform", "unknown value 'zscore'"),
    (1, {"required": False, "default": "a"}, "features[1].required", "empty list"),
    (1, {"default": "a"}, "features[1].default", "empty list"),
    (1, {"list": {"separator": ""}}, "features[1].list.separator", "at least one character"),
    (1, {"list": {"max_length": 0}}, "features[1].list.max_length", ">= 1"),
    (1, {"list": {"pooling": "max"}}, "features[1].list.pooling", "unknown value 'max'"),
    (1, {"list": {"too_long": "drop"}}, "features[1].list.too_long", "unknown value 'drop'"),
    (1, {"list": {"sep": ","}}, "features[1].list.sep", "unknown key"),
    (2, {"min": -1}, "features[2].min", "-1 pads"),
    (1, {"role": "bias", "serving_value": "a"}, "features[1].role", "cannot be a bias feature"),
])
def test_bad_list_declarations_name_their_key_path(index, changes, path, message):
    with pytest.raises(SpecError, match=message) as error:
        spec_from_dict(with_feature(index, **changes))
    assert error.value.path == path


@pytest.mark.parametrize("section,key", [("ranking", "group_by"), ("ranking", "user_key"), ("split", "key")])
def test_a_list_cannot_key_requests_users_or_the_split(section, key):
    data = copy.deepcopy(LIST_SPEC)
    data[section][key] = "tags"
    with pytest.raises(SpecError, match="is a list column") as error:
        spec_from_dict(data)
    assert error.value.path == f"{section}.{key}"


def test_a_list_cannot_be_a_label():
    data = copy.deepcopy(LIST_SPEC)
    data["columns"].append({"name": "labels", "type": "int", "list": {}})
    data["tasks"][0]["label"] = "labels"
    with pytest.raises(SpecError, match="must be int or float, is int list"):
        spec_from_dict(data)


STRINGS = Column("tags", "string", list=ListSpec(max_length=3))
INTS = Column("cats", "int", max=100, list=ListSpec(separator=";", max_length=2, too_long="reject"))


@pytest.mark.parametrize("column,value,expected", [
    (STRINGS, "a, b ,c", ["a", "b", "c"]),
    (STRINGS, "a,b,c,d", ["a", "b", "c"]),  # truncated to max_length
    (STRINGS, ["x y", "z"], ["x y", "z"]),  # a JSON array is not split
    (STRINGS, '["a", "b,c"]', ["a", "b,c"]),  # JSON array text (a CSV cell) is read as the array
    (STRINGS, "[a,b]", ["[a", "b]"]),  # text that is not JSON is split
    (STRINGS, "", []),
    (STRINGS, None, []),
    (STRINGS, b"a,b", ["a", "b"]),
    (STRINGS, 7, ["7"]),  # a tf.Example feature with one value reads as that value
    (INTS, "3;4", [3, 4]),
    (INTS, [3, "4"], [3, 4]),
    (INTS, 5, [5]),
    (INTS, "  ", []),
])
def test_list_values(column, value, expected):
    assert typed_list(column, value) == expected


@pytest.mark.parametrize("column,value,reason,message", [
    (STRINGS, "a,,b", WRONG_TYPE, "tags[1]: list element is empty"),
    (STRINGS, ["a", None], WRONG_TYPE, "tags[1]: list element is null"),
    (STRINGS, [b"a", b" "], WRONG_TYPE, "tags[1]: list element is empty"),
    (STRINGS, [["nested"]], WRONG_TYPE, "tags[0]: expected a string"),
    (STRINGS, {"a": 1}, WRONG_TYPE, "tags: expected a list"),
    (INTS, "1;2;3", TOO_LONG, "cats: 3 elements, more than max_length 2 (list.too_long is reject)"),
    (INTS, "1;x", WRONG_TYPE, "cats[1]: 'x' is not an integer"),
    (INTS, [1, 101], OUT_OF_RANGE, "cats[1]=101 is above the maximum 100"),
    (INTS, [-1], OUT_OF_RANGE, "cats[0]=-1: int list elements are >= 0"),
    (INTS, [1.5], WRONG_TYPE, "cats[0]: 1.5 is not an integer"),
])
def test_bad_list_values_name_the_field_and_element(column, value, reason, message):
    with pytest.raises(InvalidValue) as error:
        typed_list(column, value)
    assert error.value.reason == reason
    assert error.value.message.startswith(message), error.value.message
