"""serving.responses.arrays_json: numpy outputs written by orjson read back as the same float32
values, float16 through numpy's path, and a non-finite output refused rather than sent as null."""

import json

import numpy as np
import orjson
import pytest

from serving.responses import arrays_json


def test_float32_outputs_read_back_bit_for_bit_in_any_shape():
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((50, 4)) * 10.0 ** rng.integers(-8, 8, (50, 4))).astype(np.float32)
    text = arrays_json({"outputs": [{"name": "gate_weights", "data": values}], "id": "r1"})
    answer = json.loads(text)
    assert answer["id"] == "r1"
    np.testing.assert_array_equal(np.asarray(answer["outputs"][0]["data"], dtype=np.float32), values)


def test_float16_ints_and_scalars_are_written_too():
    text = arrays_json({"h": np.array([0.1, 2.5], np.float16), "i": np.arange(3), "s": np.float32(0.25)})
    answer = json.loads(text)
    assert answer["i"] == [0, 1, 2] and answer["s"] == 0.25
    np.testing.assert_array_equal(np.asarray(answer["h"], np.float16), np.array([0.1, 2.5], np.float16))


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan], np.float32), np.array([[np.inf]], np.float64),
                                 np.float32(np.nan)])
def test_a_non_finite_output_is_refused_not_written_as_null(bad):
    with pytest.raises((ValueError, orjson.JSONEncodeError)):
        arrays_json({"x": bad})
