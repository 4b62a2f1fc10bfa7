"""The spec's ``pipeline:`` section: unknown-column policy and reject threshold."""

import pytest
import yaml

from feature_specs.spec import PipelineConfig, SpecError
from feature_specs.spec_reader import bundled_spec_path, spec_from_dict


@pytest.fixture()
def clicklog_dict():
    with open(bundled_spec_path("clicklog"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_defaults_when_the_section_is_absent(clicklog_dict):
    clicklog_dict.pop("pipeline", None)
    assert spec_from_dict(clicklog_dict).pipeline == PipelineConfig("ignore", 0.05)


def test_section_is_read_and_round_trips(clicklog_dict):
    clicklog_dict["pipeline"] = {"unknown_columns": "reject", "max_reject_rate": 0}
    spec = spec_from_dict(clicklog_dict)
    assert spec.pipeline == PipelineConfig(unknown_columns="reject", max_reject_rate=0.0)
    assert spec_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("section, path, message", [
    ({"unknown_columns": "drop"}, "pipeline.unknown_columns", "expected one of ignore, reject"),
    ({"max_reject_rate": 1.5}, "pipeline.max_reject_rate", "must be in [0, 1]"),
    ({"max_reject_rate": "5%"}, "pipeline.max_reject_rate", "expected a number"),
    ({"max_reject_rat": 0.1}, "pipeline.max_reject_rat", "unknown key"),
])
def test_mistakes_name_their_key_path(clicklog_dict, section, path, message):
    clicklog_dict["pipeline"] = section
    with pytest.raises(SpecError) as info:
        spec_from_dict(clicklog_dict)
    assert info.value.path == path and message in str(info.value)
