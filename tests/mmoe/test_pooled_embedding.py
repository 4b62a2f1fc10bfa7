"""PooledEmbedding: masked mean/sum pooling computed by hand, config and .keras round trips,
gradients that reach only the looked-up rows (never the padding row)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmoe.layers.pooled_embedding import PooledEmbedding

TABLE = np.arange(12, dtype="float32").reshape(6, 2)  # row r = [2r, 2r + 1]
INDICES = np.array([[1, 2, 0, 0], [3, 3, 5, 0], [0, 0, 0, 0]])  # last row: the empty list


def layer(pooling):
    return PooledEmbedding(6, 2, pooling=pooling, embeddings_initializer=keras.initializers.Constant(TABLE))


@pytest.mark.parametrize("pooling,expected", [
    ("sum", [[2 + 4, 3 + 5], [6 + 6 + 10, 7 + 7 + 11], [0, 0]]),
    ("mean", [[3, 4], [22 / 3, 25 / 3], [0, 0]]),
])
def test_pools_the_present_elements_and_an_empty_list_to_zeros(pooling, expected):
    out = layer(pooling)(INDICES)
    assert tuple(out.shape) == (3, 2)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)


def test_output_shape_and_one_weight():
    pooled = layer("mean")
    assert pooled.compute_output_shape((None, 4)) == (None, 2)
    pooled.build((None, 4))
    assert [tuple(w.shape) for w in pooled.weights] == [(6, 2)]


def test_config_round_trip_and_keras_file(tmp_path):
    pooled = layer("sum")
    config = pooled.get_config()
    assert config["pooling"] == "sum" and config["input_dim"] == 6 and config["output_dim"] == 2
    clone = PooledEmbedding.from_config(config)
    np.testing.assert_allclose(np.asarray(clone(INDICES)), np.asarray(pooled(INDICES)))
    inputs = keras.Input(shape=(4,), dtype="int64")
    model = keras.Model(inputs, layer("mean")(inputs))
    path = str(tmp_path / "pooled.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(INDICES)), np.asarray(model(INDICES)))
    assert isinstance(reloaded.layers[-1], PooledEmbedding)


def test_gradients_reach_the_looked_up_rows_only():
    pooled = layer("mean")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pooled(INDICES))
    gradient = tf.convert_to_tensor(tape.gradient(loss, pooled.weights[0]))
    # row 1 and 2: 1/2 each (mean of two); row 3 twice and row 5 once in a mean of three
    np.testing.assert_allclose(gradient.numpy()[:, 0], [0, 0.5, 0.5, 2 / 3, 0, 1 / 3], rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"input_dim": 1, "output_dim": 2}, "input_dim"),
    ({"input_dim": 4, "output_dim": 0}, "output_dim"),
    ({"input_dim": 4, "output_dim": 2, "pooling": "max"}, "pooling"),
])
def test_bad_arguments_raise_value_errors_quoting_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PooledEmbedding(**kwargs)
