"""TargetAttentionEmbedding (DIN's activation unit): the weighted sum by hand, padding masked,
config and .keras round trips, gradients to the query and to the looked-up rows only."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmoe.layers.target_attention import TargetAttentionEmbedding

INDICES = np.array([[1, 2, 0], [3, 3, 5], [0, 0, 0]])  # last row: the empty list
QUERY = np.array([[0.5, -1.0], [1.0, 2.0], [0.3, 0.3]], dtype="float32")


def layer():
    keras.utils.set_random_seed(3)
    return TargetAttentionEmbedding(6, 4, units=(5,))


def by_hand(attention, indices, query):
    table = attention.embeddings.numpy()
    (k0, b0), (k1, b1) = [(k.numpy(), b.numpy()) for k, b in attention.hidden]
    q = query @ attention.query_kernel.numpy()
    out = np.zeros((len(indices), table.shape[1]), dtype="float32")
    for row, elements in enumerate(indices):
        for index in elements:
            if index == 0:
                continue
            e = table[index]
            x = np.concatenate([e, q[row], e - q[row], e * q[row]])
            weight = (np.maximum(x @ k0 + b0, 0.0) @ k1 + b1)[0]
            out[row] += weight * e
    return out


def test_the_weighted_sum_of_the_present_elements_and_zeros_for_an_empty_list():
    attention = layer()
    out = np.asarray(attention([INDICES, QUERY]))
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, by_hand(attention, INDICES, QUERY), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[2], np.zeros(4))


def test_padding_and_the_query_matter_as_they_should():
    attention = layer()
    base = np.asarray(attention([INDICES, QUERY]))
    padded = np.asarray(attention([np.pad(INDICES, ((0, 0), (0, 2))), QUERY]))
    np.testing.assert_allclose(padded, base, rtol=1e-6)  # more padding, same output
    moved = np.asarray(attention([INDICES, QUERY + 1.0]))
    assert not np.allclose(moved[:2], base[:2])  # the weights depend on the candidate


def test_config_round_trip_and_keras_file(tmp_path):
    attention = layer()
    config = attention.get_config()
    assert config["units"] == [5] and config["input_dim"] == 6 and config["output_dim"] == 4
    indices = keras.Input(shape=(3,), dtype="int64")
    query = keras.Input(shape=(2,))
    model = keras.Model([indices, query], attention([indices, query]))
    path = str(tmp_path / "attention.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded([INDICES, QUERY])), np.asarray(model([INDICES, QUERY])), rtol=1e-6)
    clone = TargetAttentionEmbedding.from_config(config)
    assert clone([INDICES, QUERY]).shape == (3, 4)


def test_gradients_reach_the_query_and_the_looked_up_rows_only():
    attention = layer()
    query = tf.Variable(QUERY)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(attention([INDICES, query]) ** 2)
    grads = tape.gradient(loss, [attention.embeddings, query, attention.query_kernel])
    table = tf.convert_to_tensor(grads[0]).numpy()
    assert np.all(table[[0, 4]] == 0.0) and np.all(np.abs(table[[1, 2, 3, 5]]).sum(axis=1) > 0)
    assert np.abs(grads[1].numpy()[:2]).sum() > 0 and np.all(grads[1].numpy()[2] == 0.0)
    assert np.abs(grads[2].numpy()).sum() > 0


@pytest.mark.parametrize("kwargs", [{"input_dim": 1, "output_dim": 2}, {"input_dim": 4, "output_dim": 0},
                                    {"input_dim": 4, "output_dim": 2, "units": ()}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        TargetAttentionEmbedding(**kwargs)
