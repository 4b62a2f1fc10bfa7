"""The split is a pure function of the key value and the spec: stable, and roughly the fraction."""

import hashlib

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from feature_specs.spec import Split
from pipelines.split import EVAL, TRAIN, SplitRows, hash_fraction, split_index


def test_hash_fraction_is_sha256_of_seed_and_value():
    expected = int.from_bytes(hashlib.sha256(b"17:r42").digest()[:8], "big") / 2**64
    assert hash_fraction("r42", 17) == expected
    # Pinned: a change here reshuffles every existing train/eval split.
    assert round(hash_fraction("r42", 17), 12) == round(expected, 12)
    assert 0.0 <= hash_fraction("anything", 0) < 1.0


def test_hash_split_fraction_and_grouping():
    split = Split(method="hash", key="request_id", eval_fraction=0.2, seed=17)
    keys = [f"r{i}" for i in range(20000)]
    assigned = [split_index({"request_id": k}, split) for k in keys]
    assert abs(assigned.count(EVAL) / len(keys) - 0.2) < 0.015
    # Same key, same split, whatever else is in the row; and the same on a second pass.
    assert all(split_index({"request_id": k, "x": i}, split) == a
               for i, (k, a) in enumerate(zip(keys, assigned)))


def test_seed_changes_the_assignment():
    keys = [f"r{i}" for i in range(1000)]
    a = [split_index({"k": k}, Split(method="hash", key="k", eval_fraction=0.5, seed=1)) for k in keys]
    b = [split_index({"k": k}, Split(method="hash", key="k", eval_fraction=0.5, seed=2)) for k in keys]
    assert a != b


def test_timestamp_split_sends_rows_at_or_after_cutoff_to_eval():
    split = Split(method="timestamp", key="ts", cutoff=100)
    assert [split_index({"ts": t}, split) for t in (0, 99, 100, 101)] == [TRAIN, TRAIN, EVAL, EVAL]


def test_split_transform_is_deterministic(test_pipeline):
    split = Split(method="hash", key="request_id", eval_fraction=0.3, seed=5)
    rows = [{"request_id": f"r{i % 50}", "i": i} for i in range(200)]
    expected_eval = [r for r in rows if split_index(r, split) == EVAL]
    expected_train = [r for r in rows if split_index(r, split) == TRAIN]
    assert expected_eval and expected_train
    for attempt in range(2):
        with test_pipeline() as p:
            train, eval_ = p | beam.Create(rows) | "Split" >> SplitRows(split)
            assert_that(train, equal_to(expected_train), label="Train")
            assert_that(eval_, equal_to(expected_eval), label="Eval")
