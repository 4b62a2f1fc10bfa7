"""Behaviour histories (pipelines/history.py): the user's earlier positive items, never from the
same or a later timestamp, identical on both pipeline paths, counted only from valid rows."""

from __future__ import annotations

import copy
import csv
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from conftest import TINY_SPEC
from feature_specs.artifacts import Workdir
from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from pipelines.history import AddHistories, HistoryIndex
from pipelines.run import preprocess
from pipelines.validate_batches import valid_schema
from test_list_columns import decoded_examples

LENGTH = 3
HISTORY = {"name": "clicked_queries", "type": "string", "transform": "vocabulary", "list": {"max_length": LENGTH},
           "history": {"user": "user", "item": "query", "time": "ts", "positive": "clicked"}}


def history_spec(**history):
    data = copy.deepcopy(TINY_SPEC)
    data["features"].append(dict(HISTORY, history=dict(HISTORY["history"], **history)))
    return data


SPEC = spec_from_dict(history_spec())


def log_rows(n: int, seed: int = 0) -> list[dict]:
    """Impressions of 6 users over few distinct timestamps (many ties), 8 queries, ~40% clicked;
    every 9th row has hour 99 (rejected: its click must enter no history)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append({"user": f"u{rng.integers(6)}", "hour": 99 if i % 9 == 4 else int(rng.integers(24)),
                     "age": 30, "price": 1.5, "pop": float(i % 5), "query": f"q{rng.integers(8)}",
                     "position": 1 + i % 4, "request_id": f"r{i // 3}", "ts": int(rng.integers(0, 12)) * 10,
                     "clicked": int(rng.random() < 0.4), "dwell": 2.0})
    return rows


def expected_histories(rows: list[dict]) -> dict[str, list[str]]:
    """request_id + query + ts -> history, by brute force over the valid rows."""
    valid = [r for r in rows if r["hour"] <= 23]
    out = {}
    for row in valid:
        earlier = sorted((r["ts"], r["query"]) for r in valid
                         if r["user"] == row["user"] and r["clicked"] > 0 and r["ts"] < row["ts"])
        out[_key(row)] = [q for _, q in earlier[::-1][:LENGTH]]
    return out


def _key(row) -> str:
    values = {k: (v[0] if isinstance(v, list) else v) for k, v in row.items() if k in ("user", "query", "ts", "position",
                                                                                      "request_id", "pop")}
    return "|".join(str(values[k]) for k in ("request_id", "user", "query", "ts", "position", "pop"))


def events_table(events, item_type):
    users, times, items = zip(*events) if events else ((), (), ())
    schema = pa.schema([("user", item_type), ("time", pa.int64()), ("item", item_type)])
    return pa.table({"user": list(users), "time": list(times), "item": list(items)}, schema=schema)


def test_the_index_gives_the_newest_items_strictly_before_a_time():
    events = [("u1", 20, "b"), ("u1", 10, "a"), ("u1", 20, "a"), ("u1", 30, "c"), ("u1", 40, "d"), ("u0", 25, "z")]
    index = HistoryIndex.of(events_table(events, pa.string()))
    users = pa.array(["u1", "u1", "u1", "u1", "u0", "u0", "nobody"])
    times = np.array([20, 21, 41, 10, 25, 26, 99])
    assert index.histories(users, times, 5).to_pylist() == [
        ["a"],  # the two items at 20 are not before 20
        ["b", "a", "a"],  # newest first; ties ordered by item
        ["d", "c", "b", "a", "a"],
        [], [], ["z"], []]
    assert index.histories(users, times, 2).to_pylist()[2] == ["d", "c"]


def test_an_index_without_positives_gives_empty_histories():
    index = HistoryIndex.of(events_table([], pa.int64()))
    assert index.histories(pa.array([1, 2]), np.array([5, 6]), 3).to_pylist() == [[], []]


def test_add_histories_on_rows_and_on_arrow_tables(test_pipeline):
    rows = [r for r in log_rows(40) if r["hour"] <= 23]
    expected = expected_histories(rows)
    schema = valid_schema(SPEC.logged_columns)
    with test_pipeline() as p:
        by_row = (p | "Rows" >> beam.Create(rows)
                  | "RowHistories" >> AddHistories(SPEC.history_features, SPEC.all_columns, batched=False)
                  | "RowKeys" >> beam.Map(lambda r: (_key(r), r["clicked_queries"])))
        tables = [pa.Table.from_pylist(rows[:17], schema=schema), pa.Table.from_pylist(rows[17:], schema=schema)]
        by_table = (p | "Tables" >> beam.Create(tables)
                    | "TableHistories" >> AddHistories(SPEC.history_features, SPEC.all_columns, batched=True)
                    | "TableRows" >> beam.FlatMap(pa.Table.to_pylist)
                    | "TableKeys" >> beam.Map(lambda r: (_key(r), r["clicked_queries"])))
        assert_that(by_row, equal_to(sorted(expected.items())), label="rows")
        assert_that(by_table, equal_to(sorted(expected.items())), label="tables")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    rows = log_rows(150)
    path = os.path.join(str(tmp_path_factory.mktemp("raw")), "log.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = {}
    for batch_rows in ("7", "0"):
        workdir = Workdir(str(tmp_path_factory.mktemp(f"run_{batch_rows}")))
        report = preprocess(SPEC, path, workdir, beam_args=[f"--batch_rows={batch_rows}"], max_reject_rate=0.2)
        out[batch_rows] = (workdir, report)
    return rows, out


@pytest.mark.parametrize("batch_rows", ["7", "0"])
def test_the_written_history_never_looks_at_the_same_or_a_later_timestamp(runs, batch_rows):
    rows, out = runs
    workdir, report = out[batch_rows]
    written = decoded_examples(workdir, "train") + decoded_examples(workdir, "eval")
    valid = [r for r in rows if r["hour"] <= 23]
    assert len(written) == len(valid) and report["rejected"]["total"] == len(rows) - len(valid)
    positives = {}  # (user, query) -> timestamps of valid clicked rows
    for r in valid:
        if r["clicked"]:
            positives.setdefault((r["user"], r["query"]), []).append(r["ts"])
    expected = expected_histories(rows)
    for example in written:
        history = example["clicked_queries"]
        assert len(history) <= LENGTH
        for query in history:  # each element is a click of this user strictly before this row
            assert min(positives[(example["user"][0], query)]) < example["ts"][0]
        assert history == expected[_key(example)]
    assert any(len(e["clicked_queries"]) == LENGTH for e in written)


def test_both_paths_write_the_same_histories_and_vocabulary(runs):
    _, out = runs
    histories = [sorted((_key(e), tuple(e["clicked_queries"])) for e in
                        decoded_examples(out[b][0], "train") + decoded_examples(out[b][0], "eval")) for b in ("7", "0")]
    assert histories[0] == histories[1]
    vocabularies = [open(out[b][0].vocabulary_file("clicked_queries")).read() for b in ("7", "0")]
    assert vocabularies[0] == vocabularies[1] and vocabularies[0]


@pytest.mark.parametrize("change,key,message", [
    ({"item": "nope"}, "history.item", "not a column the log holds"),
    ({"time": "query"}, "history.time", "needs timestamp or int"),
    ({"item": "hour"}, "history.item", "needs string"),
    ({"positive": "user"}, "history.positive", "needs int or float"),
])
def test_a_history_naming_a_wrong_column_is_an_error_naming_the_key(change, key, message):
    with pytest.raises(SpecError, match=message) as error:
        spec_from_dict(history_spec(**change))
    assert key in str(error.value)


def test_a_history_must_be_a_truncated_list():
    data = history_spec()
    del data["features"][-1]["list"]
    with pytest.raises(SpecError, match="add a list: block"):
        spec_from_dict(data)
    data = history_spec()
    data["features"][-1]["list"] = {"too_long": "reject"}
    with pytest.raises(SpecError, match="too_long must be truncate"):
        spec_from_dict(data)


def test_the_spec_round_trips_with_its_history_and_the_log_need_not_hold_it():
    assert spec_from_dict(SPEC.to_dict()) == SPEC
    assert "clicked_queries" not in {c.name for c in SPEC.logged_columns}
    assert [f.name for f in SPEC.history_features] == ["clicked_queries"]
