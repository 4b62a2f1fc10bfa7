"""The preprocessing half of list features: padded lists to indices, 0 for padding, OOV next,
the vocabulary after; hashing keeps bin 0 for padding; the pooled embedding sized to match."""

import os

import keras
import numpy as np
import tensorflow as tf

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec import Feature, ListSpec
from feature_specs.tensors import pad_list
from mmoe.encoder import embed_feature, embedding_input_dim, preprocess_feature


def workdir_with(tmp_path, name, values):
    workdir = Workdir(str(tmp_path))
    os.makedirs(os.path.dirname(workdir.vocabulary_file(name)), exist_ok=True)
    with open(workdir.vocabulary_file(name), "w") as handle:
        handle.write("".join(f"{v}\n" for v in values))
    return workdir


def test_int_list_vocabulary_maps_padding_to_zero_and_unknown_ids_to_oov(tmp_path):
    feature = Feature(name="cats", dtype="int", transform="vocabulary", num_oov=2, list=ListSpec(max_length=4))
    workdir = workdir_with(tmp_path, "cats", [7, 3, 11])
    statistics = Statistics(vocabulary_sizes={"cats": 3})
    raw = keras.Input(shape=(4,), dtype="int64", name="cats")
    model = keras.Model(raw, preprocess_feature(feature, raw, workdir, statistics))
    padded = pad_list(feature, tf.ragged.constant([[7, 11, 99], [], [3, 3, 3, 3, 3]], dtype=tf.int64))
    out = np.array(model(padded))
    assert out[0, 2] in (1, 2), "an unknown id goes to one of the two OOV buckets"
    out[0, 2] = 1
    np.testing.assert_array_equal(out, [[3, 5, 1, 0], [0, 0, 0, 0], [4, 4, 4, 4]])
    assert embedding_input_dim(feature, statistics) == 3 + 2 + 1  # vocabulary, OOV, padding


def test_string_list_hashing_keeps_bin_zero_for_padding_and_pools_to_zero_when_empty(tmp_path):
    feature = Feature(name="tags", dtype="string", transform="hashing", num_bins=8, embedding_dim=3,
                      list=ListSpec(max_length=3, pooling="sum"))
    raw = keras.Input(shape=(3,), dtype="string", name="tags")
    indices = preprocess_feature(feature, raw, Workdir(str(tmp_path)), Statistics())
    pooled = embed_feature(feature, keras.Input(shape=(3,), dtype="int64"), Statistics())
    assert tuple(pooled.shape) == (None, 3)
    model = keras.Model(raw, indices)
    out = np.asarray(model(pad_list(feature, tf.ragged.constant([["a", "b"], []]))))
    assert (out[0, :2] > 0).all() and out[0, 2] == 0 and (out[1] == 0).all()


def test_pad_list_cuts_and_pads_dense_and_ragged_input_alike():
    feature = Feature(name="tags", dtype="string", transform="hashing", num_bins=8, list=ListSpec(max_length=2))
    ragged = pad_list(feature, tf.ragged.constant([["a", "b", "c"], ["d"]]))
    dense = pad_list(feature, tf.constant([["a", "b", "c"], ["d", "", ""]]))
    narrow = pad_list(feature, tf.constant([["a"], ["d"]]))
    assert ragged.numpy().tolist() == dense.numpy().tolist() == [[b"a", b"b"], [b"d", b""]]
    assert narrow.numpy().tolist() == [[b"a", b""], [b"d", b""]]
