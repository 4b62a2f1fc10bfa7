"""List columns on the corruption property test's inputs: the batched path gives the row path's
typed rows and rejections, and both analyze paths count the same elements into the same
vocabularies (most frequent first, ties by value)."""

import collections
import copy

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_SPEC
from feature_specs.spec_reader import spec_from_dict
from pipelines.analyze import ComputeVocabularies
from pipelines.analyze_batches import ComputeBatchVocabularies
from pipelines.records import Rejection
from pipelines.validate_batches import valid_schema
from test_batched_path import _batched_results, _canonical_rows, _rejection_key, _row_results
from test_corruption_property import corruption, make_lines

LIST_TINY = copy.deepcopy(TINY_SPEC)
LIST_TINY["features"] += [
    {"name": "tags", "type": "string", "list": {"max_length": 3}, "transform": "vocabulary", "top_k": 4},
    {"name": "cats", "type": "int", "list": {"separator": ";", "max_length": 3, "too_long": "reject"},
     "transform": "vocabulary", "max": 40, "min_count": 2},
]
SPEC = spec_from_dict(LIST_TINY)

# elements: good ones, one with spaces around it (stripped), an empty one (rejected)
TAGS = st.lists(st.sampled_from(["a", "b", "c", " d ", "é", ""]), max_size=5)
# ints: in range, above max 40, negative; four of them is over max_length under too_long: reject
CATS = st.lists(st.sampled_from(["1", "2", "3", "39", "41", "-1", "x", "7"]), max_size=4)


def list_lines(corruptions, lists):
    lines, _ = make_lines(corruptions)
    out = [lines[0] + ",tags,cats"]
    for line, (tags, cats) in zip(lines[1:], lists * len(lines)):
        if line.startswith('"'):  # a garbage line stays garbage
            out.append(line)
        else:
            out.append(f'{line},"{",".join(tags)}",{";".join(cats)}')
    return out


def vocabularies(rows):
    """The vocabulary of each list feature from valid rows, as the spec selects it."""
    out = []
    for feature in (SPEC.column("tags"), SPEC.column("cats")):
        counts = collections.Counter(e for r in rows for e in r[feature.name])
        kept = sorted(((v, n) for v, n in counts.items() if n >= feature.min_count), key=lambda vn: (-vn[1], vn[0]))
        out.append((feature.name, [v for v, _ in kept[:feature.top_k]]))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=1, max_size=30), st.lists(st.tuples(TAGS, CATS), min_size=1, max_size=30),
       st.sampled_from([1, 3, 64]))
def test_batch_checks_of_lists_give_the_row_checks_results(corruptions, lists, batch_rows):
    lines = list_lines(corruptions, lists)
    results = _row_results(lines, SPEC)
    valid, rejected, _ = _batched_results("\n".join(lines) + "\n", SPEC, batch_rows)
    row_valid = [r for r in results if not isinstance(r, Rejection)]
    freeze = lambda rows: _canonical_rows([{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()}
                                           for r in rows])
    assert freeze(valid) == freeze(row_valid)
    assert sorted(map(_rejection_key, rejected)) == sorted(_rejection_key(r) for r in results if isinstance(r, Rejection))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=5, max_size=30), st.lists(st.tuples(TAGS, CATS), min_size=1, max_size=30))
def test_both_analyze_paths_count_list_elements_into_the_same_vocabularies(test_pipeline, corruptions, lists):
    lines = list_lines(corruptions, lists)
    rows = [r for r in _row_results(lines, SPEC) if not isinstance(r, Rejection)]
    expected = vocabularies(rows)
    features = [SPEC.column("tags"), SPEC.column("cats")]
    with test_pipeline() as p:
        by_row = p | "Rows" >> beam.Create(rows) | "RowVocabularies" >> ComputeVocabularies(features)
        assert_that(by_row, equal_to(expected), label="RowPath")
        halves = [rows[: len(rows) // 2], rows[len(rows) // 2:]]
        tables = [pa.Table.from_pylist(h, schema=valid_schema(SPEC.all_columns)) for h in halves]
        by_batch = p | "Tables" >> beam.Create(tables) | "BatchVocabularies" >> ComputeBatchVocabularies(features)
        assert_that(by_batch, equal_to(expected), label="BatchedPath")


ARROW_TAGS = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", " c", "", "é", " ", "x y"])),
                                           max_size=5))
ARROW_CATS = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(-3, 45)), max_size=5))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(ARROW_TAGS, ARROW_CATS), min_size=1, max_size=25),
       st.sampled_from([pa.int64(), pa.int32()]))
def test_arrow_list_columns_are_checked_vectorized_as_the_row_path_checks_them(lists, int_type):
    """Parquet list columns (nulls, null and blank elements, negative, above max, too long) on
    the vectorized path give the row path's typed rows and rejections."""
    from pipelines.batches import RawBatch
    from pipelines.quality import Profile
    from pipelines.validate import check_record, log1p_columns
    from pipelines.validate_batches import BatchChecker
    from test_corruption_property import BASE

    n = len(lists)
    columns = {name: [value] * n for name, value in BASE.items()}
    columns["request_id"] = [f"r{i}" for i in range(n)]
    table = pa.table({**{k: pa.array(v) for k, v in columns.items()},
                      "tags": pa.array([t for t, _ in lists], pa.list_(pa.string())),
                      "cats": pa.array([c for _, c in lists], pa.list_(int_type))})
    batch = RawBatch("log.parquet", table=table)
    profile = Profile()
    valid, rejected = BatchChecker(SPEC).check(batch, profile)
    results = [check_record(batch.record(i), SPEC.all_columns, log1p_columns(SPEC)) for i in range(n)]
    freeze = lambda rows: _canonical_rows([{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()}
                                           for r in rows])
    assert freeze(valid.to_pylist()) == freeze([r for r in results if not isinstance(r, Rejection)])
    assert sorted(map(_rejection_key, rejected)) == sorted(_rejection_key(r) for r in results if isinstance(r, Rejection))
    assert profile.missing.get("tags", 0) == sum(t is None for t, _ in lists)


LIST_TEXT = st.one_of(st.none(), st.text(st.sampled_from(list("ab ,;7-0x\t[]\u00a0é\u2003\"")), max_size=12),
                      st.sampled_from(["", " ", "a, b", "1;2;3", "1;2;3;4", "007;41", "[1, 2]", '["a", "b"]', "a,,b"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(LIST_TEXT, LIST_TEXT), min_size=1, max_size=25))
def test_list_text_at_the_edges_of_the_vectorized_split_is_read_as_the_row_path_reads_it(texts):
    """Text list cells (a table of strings, as CSV blocks and JSONL text arrive): unicode spaces,
    tabs, brackets, JSON array text, empty elements, too long lists."""
    from pipelines.batches import RawBatch
    from pipelines.quality import Profile
    from pipelines.validate import check_record, log1p_columns
    from pipelines.validate_batches import BatchChecker
    from test_corruption_property import BASE

    n = len(texts)
    columns = {name: pa.array([value] * n) for name, value in BASE.items()}
    columns["request_id"] = pa.array([f"r{i}" for i in range(n)])
    table = pa.table({**columns, "tags": pa.array([t for t, _ in texts], pa.string()),
                      "cats": pa.array([c for _, c in texts], pa.string())})
    batch = RawBatch("log.csv", table=table, lines=[f"line {i}" for i in range(n)])
    profile = Profile()
    valid, rejected = BatchChecker(SPEC).check(batch, profile)
    results = [check_record(batch.record(i), SPEC.all_columns, log1p_columns(SPEC)) for i in range(n)]
    freeze = lambda rows: _canonical_rows([{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()}
                                           for r in rows])
    assert freeze(valid.to_pylist()) == freeze([r for r in results if not isinstance(r, Rejection)])
    assert sorted(map(_rejection_key, rejected)) == sorted(_rejection_key(r) for r in results if isinstance(r, Rejection))
    from feature_specs.values import is_missing

    assert profile.missing.get("tags", 0) == sum(is_missing(t) for t, _ in texts)
