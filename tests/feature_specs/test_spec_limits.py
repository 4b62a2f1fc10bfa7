"""Hostile spec files are refused quickly, by name, with bounded messages: issue 22, item 6 and the
spec side of item 7 (size cap, YAML alias bombs, non-UTF-8 text, absurd sizes such as batch_size 1e23)."""

from __future__ import annotations

import copy
import time
import tracemalloc

import pytest
import yaml

from feature_specs.spec import (
    MAX_BATCH_SIZE,
    MAX_EMBEDDING_DIM,
    MAX_EPOCHS,
    MAX_EXPERTS,
    MAX_LAYERS,
    MAX_QUANTILE_BUCKETS,
    MAX_SHUFFLE_BUFFER,
    MAX_TABLE_ROWS,
    MAX_UNITS,
    SpecError,
)
from feature_specs.spec_file import MAX_NUMBER_CHARS, MAX_SPEC_BYTES, MAX_SPEC_VALUES
from feature_specs.spec_nodes import QUOTED_CHARS, quoted
from feature_specs.spec_reader import bundled_spec_path, load_spec, spec_from_dict

# The nine-level alias bomb: 9**9 (387 million) strings once expanded, in nine lines.
NINE_LEVEL_BOMB = "\n".join(
    [f"a: &a [{', '.join(['lol'] * 9)}]"]
    + [f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]" for previous, name in zip("abcdefgh", "bcdefghi")]
) + "\n"


@pytest.fixture
def clicklog_dict():
    with open(bundled_spec_path("clicklog"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _write(tmp_path, text: str | bytes, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def _refusal(path: str, seconds: float = 1.0, megabytes: float = 50.0) -> str:
    """The SpecError message of loading ``path``, checked to come within ``seconds`` and ``megabytes``."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(SpecError) as info:
            load_spec(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    assert peak < megabytes * 2**20, f"peak {peak / 2**20:.0f} MB"
    message = str(info.value)
    assert path in message and "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("tail", ["", "name: *i\n", "features: [*i]\n"])
def test_nine_level_alias_bomb_is_refused_quickly(tmp_path, tail):
    message = _refusal(_write(tmp_path, NINE_LEVEL_BOMB + tail))
    assert f"YAML aliases expand this value to more than {MAX_SPEC_VALUES:,} values" in message
    assert "line 7, column 4" in message  # g: 9**7 strings, the first level over the limit


def test_aliases_that_stay_small_still_load(tmp_path):
    text = open(bundled_spec_path("clicklog"), encoding="utf-8").read()
    text = text.replace("  num_experts: 8\n", "  num_experts: &experts 8\n").replace(
        "  checkpoint_every_steps: 200", "  checkpoint_every_steps: *experts")
    assert load_spec(_write(tmp_path, text)).training.checkpoint_every_steps == 8


def test_a_recursive_alias_is_refused(tmp_path):
    assert "a YAML alias refers to a value that contains it" in _refusal(_write(tmp_path, "name: &n [a, *n]\n"))


def test_a_file_over_the_cap_is_refused_before_parsing(tmp_path):
    path = _write(tmp_path, "name: " + "a" * MAX_SPEC_BYTES + "\n")
    assert f"larger than {MAX_SPEC_BYTES:,} bytes" in _refusal(path, megabytes=4)
    # An endless stream is refused too: at most MAX_SPEC_BYTES + 1 bytes are ever read.
    with pytest.raises(SpecError, match="larger than"):
        load_spec("/dev/zero")


def test_a_file_at_the_cap_is_parsed(tmp_path):
    path = _write(tmp_path, "# " + "x" * (MAX_SPEC_BYTES - 3) + "\n")
    assert len(open(path, "rb").read()) == MAX_SPEC_BYTES
    with pytest.raises(SpecError, match="name: required key is missing"):
        load_spec(path)


def test_non_utf8_spec_names_the_file_and_byte_offset(tmp_path):
    path = _write(tmp_path, b"# latin-1\nname: clicklog\ndescription: caf\xe9\n")
    message = _refusal(path)
    assert "not UTF-8 text: byte 0xe9 at byte offset 41 (line 3)" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x: " + "9" * 5000 + "\n", f"line 1, column 4: a number written with 5,000 characters (more than {MAX_NUMBER_CHARS})"),
        ("name: 2021-13-45\n", "a value cannot be read: month must be in 1..12"),
        ("name: [unclosed\n", "<yaml>: not valid YAML: line 2, column 1:"),
        ("a: 1\n---\nb: 2\n", "<yaml>: not valid YAML: line 2, column 1: but found another document"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "<yaml>: not valid YAML:"),
    ],
)
def test_unreadable_yaml_is_one_line_naming_where(tmp_path, text, expected):
    assert expected in _refusal(_write(tmp_path, text))


def test_quoted_values_are_short_prefixes():
    assert quoted("clicked") == "'clicked'"
    long = quoted("x" * 1_000_000)
    assert long == f"{'x' * QUOTED_CHARS!r}... (1,000,000 characters)"
    shared = ["lol"] * 9
    for _ in range(8):  # the bomb's value as Python builds it: 9**9 strings through shared lists
        shared = [shared] * 9
    started = time.perf_counter()
    assert quoted(shared).endswith("... (9 items)") and len(quoted(shared)) < QUOTED_CHARS + 20
    assert len(quoted(10**4000)) <= QUOTED_CHARS + 5
    assert time.perf_counter() - started < 0.1


def test_messages_quote_a_prefix_of_a_huge_value(clicklog_dict):
    for mutate, where in [(lambda d: d["features"][0].update(name="user id " + "x" * 100_000), "features[0].name:"),
                          (lambda d: d["training"].update({"k" * 100_000: 1}), "training.'kkkk"),
                          (lambda d: d.update(name=[["x" * 1000] * 1000] * 1000), "name: expected a string, got list")]:
        data = copy.deepcopy(clicklog_dict)
        mutate(data)
        with pytest.raises(SpecError) as info:
            spec_from_dict(data, source="my.yaml")
        assert where in str(info.value) and len(str(info.value)) < 300, str(info.value)[:500]


def test_keys_of_mixed_types_are_reported_not_crashed_on(clicklog_dict):
    data = copy.deepcopy(clicklog_dict)
    data["training"].update({1: 2, "zz": 3})
    with pytest.raises(SpecError, match=r"training\.1: unknown key"):
        spec_from_dict(data)


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("training", "batch_size", 10**23, f"training.batch_size: must be <= {MAX_BATCH_SIZE:,}, got 100000000000000000000000"),
        ("training", "batch_size", 1e23, "training.batch_size: expected an integer, got float 1e+23"),
        ("training", "batch_size", "1e23", "training.batch_size: expected an integer, got str '1e23'"),
        ("training", "epochs", MAX_EPOCHS + 1, f"training.epochs: must be <= {MAX_EPOCHS:,}"),
        ("training", "shuffle_buffer", MAX_SHUFFLE_BUFFER + 1, f"training.shuffle_buffer: must be <= {MAX_SHUFFLE_BUFFER:,}"),
        ("training", "seed", -1, "training.seed: must be >= 0"),
        ("training", "steps_per_execution", 2**31, "training.steps_per_execution: must be <= 2,147,483,647"),
        ("model", "num_experts", MAX_EXPERTS + 1, f"model.num_experts: must be <= {MAX_EXPERTS:,}"),
        ("model", "num_levels", MAX_LAYERS + 1, f"model.num_levels: must be <= {MAX_LAYERS}"),
        ("model", "expert_units", [64, MAX_UNITS + 1], f"model.expert_units[1]: must be <= {MAX_UNITS:,}"),
        ("model", "tower_units", [8] * (MAX_LAYERS + 1), f"model.tower_units: at most {MAX_LAYERS} items, got {MAX_LAYERS + 1}"),
        ("model", "gate_temperature", 10**400, "model.gate_temperature: must be finite, got 1000000000"),
    ],
)
def test_absurd_sizes_are_refused_at_their_key_path(clicklog_dict, section, key, value, expected):
    data = copy.deepcopy(clicklog_dict)
    data[section][key] = value
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, source="my.yaml")
    assert f"my.yaml: {expected}" in str(info.value)


@pytest.mark.parametrize(
    "index, key, value, expected",
    [
        (0, "embedding_dim", MAX_EMBEDDING_DIM + 1, f"features[0].embedding_dim: must be <= {MAX_EMBEDDING_DIM:,}"),
        (0, "top_k", MAX_TABLE_ROWS + 1, f"features[0].top_k: must be <= {MAX_TABLE_ROWS:,}"),
        (7, "num_buckets", MAX_QUANTILE_BUCKETS + 1, f"features[7].num_buckets: must be <= {MAX_QUANTILE_BUCKETS:,}"),
        (5, "default", 2**63, "features[5].default: user_age=9223372036854775808 is outside the int64 range"),
        (6, "default", 1e39, "features[6].default: item_price=1e+39 is outside the float32 range"),
    ],
)
def test_feature_values_are_bounded(clicklog_dict, index, key, value, expected):
    data = copy.deepcopy(clicklog_dict)
    data["features"][index][key] = value
    if key == "default":
        data["features"][index].update(required=False, max=None)
    with pytest.raises(SpecError, match=expected.replace("[", r"\[").replace("+", r"\+")):
        spec_from_dict(data)


def test_each_bound_itself_is_accepted(clicklog_dict):
    data = copy.deepcopy(clicklog_dict)
    data["training"].update(batch_size=MAX_BATCH_SIZE, epochs=MAX_EPOCHS)
    data["model"]["num_experts"] = MAX_EXPERTS
    data["features"][0]["embedding_dim"] = MAX_EMBEDDING_DIM
    spec = spec_from_dict(data)
    assert (spec.training.batch_size, spec.training.epochs, spec.model.num_experts) == (MAX_BATCH_SIZE, MAX_EPOCHS, MAX_EXPERTS)
    assert spec.features[0].embedding_dim == MAX_EMBEDDING_DIM


@pytest.mark.parametrize("written", ["1e23", "1.0e+23", "100000000000000000000000"])
def test_spec_check_refuses_batch_size_1e23(tmp_path, written):
    from feature_specs.check import check_spec

    text = open(bundled_spec_path("clicklog"), encoding="utf-8").read().replace("batch_size: 512", f"batch_size: {written}")
    problems = check_spec(_write(tmp_path, text))
    assert len(problems) == 1 and "training.batch_size:" in problems[0].message, problems
