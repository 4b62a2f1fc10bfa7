"""docs/spec_guide.md's key tables against the spec's dataclasses: every default the guide states is
the default of the field (written once, in feature_specs/spec.py), and every key is listed."""

import dataclasses
import os
import re

import pytest
import yaml

from feature_specs.spec import Column, EarlyStopping, EventSource, Feature, HistorySpec, ListSpec, ModelConfig
from feature_specs.spec import PipelineConfig, Ranking, Sources, Split, Table, Task, TrainingConfig, field_default
from feature_specs.spec_reader import default_loss, spec_from_dict

GUIDE = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "spec_guide.md")
# Section heading (its first word) -> the dataclass of its table; a key "prefix.x" -> another one.
SECTIONS = {"Columns": Column, "Features": Feature, "Tasks": Task, "Ranking": Ranking, "Split": Split,
            "Model": ModelConfig, "Training": TrainingConfig, "Pipeline": PipelineConfig, "Labels": Sources,
            "Tables": Table}
NESTED = {"early_stopping": EarlyStopping, "events[*]": EventSource, "list": ListSpec, "history": HistorySpec}
KEY_FIELDS = {"type": "dtype"}  # YAML key -> field name, where they differ


def guide_tables() -> dict[type, dict[str, str]]:
    """``{dataclass: {field name: the guide's default cell}}`` from the guide's key tables."""
    tables: dict[type, dict[str, str]] = {}
    section = None
    with open(GUIDE, encoding="utf-8") as handle:
        for line in handle:
            heading = re.match(r"#{2,3} (\w+)", line)
            if heading:
                section = SECTIONS.get(heading.group(1))
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
            if section is None or len(cells) != 3:
                continue
            for key in re.findall(r"`([^`]+)`", cells[0]):
                prefix, _, name = key.rpartition(".")
                cls = NESTED[prefix] if prefix else section
                tables.setdefault(cls, {})[KEY_FIELDS.get(name, name)] = cells[1]
    return tables


def stated_default(cell: str):
    """The value a default cell states: ``required`` -> MISSING, ``none`` -> None, else the YAML in
    backticks."""
    if cell == "required":
        return dataclasses.MISSING
    if cell == "none":
        return None
    literal = re.fullmatch(r"`([^`]*)`", cell)
    assert literal, f"a default cell must be required, none or one `value`, got {cell!r}"
    return yaml.safe_load(literal.group(1))


def plain(value):
    return list(value) if isinstance(value, tuple) else value


TABLES = guide_tables()
ROWS = [(cls, name, cell) for cls, rows in TABLES.items() for name, cell in rows.items()]


def test_the_guide_has_a_table_for_every_section():
    assert set(TABLES) == set(SECTIONS.values()) | set(NESTED.values())


@pytest.mark.parametrize("cls,name,cell", ROWS, ids=[f"{c.__name__}.{n}" for c, n, _ in ROWS])
def test_every_default_in_the_guide_is_the_fields(cls, name, cell):
    if (cls, name) == (Task, "loss"):  # depends on the kind: the first loss of each
        stated = dict((kind, loss) for loss, kind in re.findall(r"`(\w+)` \((\w+)\)", cell))
        assert stated == {kind: default_loss(kind) for kind in ("binary", "regression")}
        return
    stated, expected = stated_default(cell), plain(field_default(cls, name))
    assert stated == expected, f"{cls.__name__}.{name}: the guide says {cell}, the field {expected!r}"
    assert type(stated) is type(expected), f"{cls.__name__}.{name}: {cell} is not a {type(expected).__name__}"


@pytest.mark.parametrize("cls", sorted(TABLES, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_every_key_is_in_the_guide(cls):
    # fields holding a nested section (early_stopping, events) are listed by their own keys
    keys = {f.name for f in dataclasses.fields(cls)
            if not (dataclasses.is_dataclass(field_default(cls, f.name)) or f.name == "events")}
    inherited = {f.name for f in dataclasses.fields(Column)} if cls is Feature else set()
    assert keys - inherited - set(TABLES[cls]) == set()


def test_a_drifted_default_is_caught():
    assert stated_default("`8`") != plain(field_default(Feature, "top_k"))
    assert stated_default("`[64]`") == plain(field_default(ModelConfig, "expert_units"))
    assert stated_default("required") is field_default(Split, "key")


def test_the_guides_example_per_kind_is_a_valid_spec_with_tasks_added():
    with open(GUIDE, encoding="utf-8") as handle:
        text = handle.read()
    block = text[text.index("One example per kind"):].split("```yaml\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)
    data.update(name="guide", split={"key": "request_id"}, ranking={"group_by": "request_id", "weights": {"click": 1.0}},
                tasks=[{"name": "click", "label": "clicked", "kind": "binary"},
                       {"name": "engagement", "label": "dwell_seconds", "kind": "regression", "mask": "clicked"}])
    spec = spec_from_dict(data)
    assert [f.name for f in spec.history_features] == ["clicked_categories"]
    assert spec.column("tags").is_list
