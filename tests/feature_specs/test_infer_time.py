"""`mmoe spec infer` and time (feature_specs/time_columns.py): epoch seconds and milliseconds,
yyyymmdd dates, date/time text and Parquet datetimes are never features; with a comparable one the
split is a time cut, reported, that the pipeline applies as proposed."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_specs.infer import infer_spec
from feature_specs.profile import profile_column
from feature_specs.time_columns import describe, time_cut, time_unit
from log_writers import write_csv, write_jsonl
from outcome_logs import START_MS, short_video_rows

DAY_MS = 86_400_000
LABELS = {"click": "click", "engagement": "dwell_seconds"}


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> tuple[str, list[dict]]:
    rows = short_video_rows(n=2000, seed=7)
    return write_csv(tmp_path_factory.mktemp("time") / "log.csv", rows), rows


def test_ms_timestamp_and_yyyymmdd_date_are_time_and_the_split_is_a_time_cut(short_video):
    path, rows = short_video
    inferred = infer_spec(path, LABELS, group_by="request_id")
    assert (inferred.choice("ts_ms").flag, inferred.choice("date").flag) == ("timestamp", "date")
    assert "epoch milliseconds (2024-03-01" in inferred.choice("ts_ms").reason
    assert "yyyymmdd dates (2024-03-01 .. 2024-03-07, 7 days)" in inferred.choice("date").reason
    features = {f.name for f in inferred.spec.features}
    assert not features & {"ts_ms", "date"}
    assert "date" not in {c.name for c in inferred.spec.all_columns}
    split, cut = inferred.spec.split, inferred.time_cut
    assert (split.method, split.key, split.cutoff) == ("timestamp", "ts_ms", cut.cutoff)
    assert inferred.spec.column("ts_ms").dtype == "int"  # milliseconds: compared as they are
    # at a midnight, with about the default eval share of the rows after it
    assert cut.cutoff % DAY_MS == 0 and START_MS < cut.cutoff < START_MS + 7 * DAY_MS
    times = np.array([r["ts_ms"] for r in rows])
    assert cut.eval_share == pytest.approx(np.mean(times >= cut.cutoff))
    assert 0.1 <= cut.eval_share <= 0.3
    assert f"rows at or after {describe(cut.cutoff, 'milliseconds')} ({cut.cutoff}) go to eval" in inferred.yaml
    assert "every sampled request_id group falls on one side of it" in cut.reason


def test_the_pipeline_applies_the_proposed_cut(tmp_path):
    from pipelines.run import preprocess

    rows = short_video_rows(n=400, seed=3)
    path = write_csv(tmp_path / "log.csv", rows)
    inferred = infer_spec(path, LABELS, group_by="request_id")
    report = preprocess(inferred.spec, path, str(tmp_path / "work"))
    after = sum(r["ts_ms"] >= inferred.time_cut.cutoff for r in rows)
    assert report["written"] == {"train": len(rows) - after, "eval": after, "total": len(rows)}


def rows_with(times: list, **columns) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"when": t, "x": float(rng.normal()), "clicked": int(rng.random() < 0.3), **{k: v[i] for k, v in columns.items()}}
            for i, t in enumerate(times)]


def test_epoch_seconds_are_declared_as_a_timestamp_column(tmp_path):
    times = [1_700_006_400 + 600 * i for i in range(1000)]  # ~7 days of 10-minute steps
    inferred = infer_spec(write_csv(tmp_path / "s.csv", rows_with(times)), {"click": "clicked"})
    assert inferred.choice("when").flag == "timestamp"
    assert inferred.spec.column("when").dtype == "timestamp"
    assert inferred.spec.split.method == "timestamp" and inferred.spec.split.cutoff % 86_400 == 0


def test_a_date_alone_is_the_split_key_cut_at_a_day(tmp_path):
    days = [20240101 + i // 100 for i in range(900)]  # 2024-01-01 .. 2024-01-09
    inferred = infer_spec(write_csv(tmp_path / "d.csv", rows_with(days)), {"click": "clicked"})
    assert inferred.choice("when").flag == "date"
    split = inferred.spec.split
    assert (split.method, split.key, inferred.spec.column("when").dtype) == ("timestamp", "when", "int")
    assert split.cutoff in (20240108, 20240109)  # 2 or 1 of 9 days: the share nearest 20%


def test_yyyymmdd_text_in_jsonl_is_a_date(tmp_path):
    days = [str(20240301 + i // 50) for i in range(300)]
    inferred = infer_spec(write_jsonl(tmp_path / "d.jsonl", rows_with(days)), {"click": "clicked"})
    assert inferred.choice("when").flag == "date"
    assert inferred.spec.split.method == "timestamp"


def test_parquet_datetimes_are_cut_in_seconds(tmp_path):
    start = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
    times = [start + datetime.timedelta(minutes=15 * i) for i in range(800)]  # ~8.3 days
    pq.write_table(pa.Table.from_pylist(rows_with(times)), tmp_path / "t.parquet")
    inferred = infer_spec(str(tmp_path / "t.parquet"), {"click": "clicked"})
    assert inferred.choice("when").flag == "timestamp"
    assert inferred.spec.column("when").dtype == "timestamp"
    cutoff = inferred.spec.split.cutoff
    assert cutoff % 86_400 == 0 and start.timestamp() < cutoff < times[-1].timestamp()


def test_iso_text_is_time_but_not_a_split_key(tmp_path):
    times = [f"2024-05-0{1 + i // 100}T10:{i % 60:02d}:00" for i in range(500)]
    inferred = infer_spec(write_csv(tmp_path / "iso.csv", rows_with(times)), {"click": "clicked"})
    assert inferred.choice("when").flag == "timestamp" and "date/time text" in inferred.choice("when").reason
    assert inferred.spec.split.method == "hash" and inferred.time_cut is None


def test_one_timestamp_only_keeps_the_hash_split(tmp_path):
    times = [1_700_000_000] * 200
    inferred = infer_spec(write_csv(tmp_path / "one.csv", rows_with(times, key=[f"k{i}" for i in range(200)])),
                          {"click": "clicked"})
    assert inferred.spec.split.method == "hash" and inferred.time_cut is None


def test_a_short_span_is_cut_at_the_quantile():
    values = np.arange(1_700_000_000, 1_700_000_000 + 1000 * 60, 60)  # under one day
    cut = time_cut("t", "seconds", values, 0.2, whole=True)
    assert cut.cutoff == values[800] and cut.eval_share == pytest.approx(0.2)


def test_values_that_are_not_the_whole_log_say_the_cut_may_need_moving():
    values = np.arange(20240101, 20240111)
    cut = time_cut("day", "yyyymmdd", np.repeat(values, 10), 0.2, whole=False)
    assert cut.cutoff == 20240109 and "only the first rows were read" in cut.reason


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_log_in_time_order_is_cut_on_its_whole_time_column_not_the_sample(tmp_path, fmt):
    times = [1_700_006_400 + 864 * i for i in range(1000)]  # 10 days in order; 300 rows are its first 3 days
    rows = rows_with(times)
    if fmt == "csv":
        write_csv(tmp_path / "part-0.csv", rows[:500])
        write_csv(tmp_path / "part-1.csv", rows[500:])
    else:
        pq.write_table(pa.Table.from_pylist(rows[:500]), tmp_path / "part-0.parquet")
        pq.write_table(pa.Table.from_pylist(rows[500:]), tmp_path / "part-1.parquet")
    inferred = infer_spec(str(tmp_path / f"part-*.{fmt}"), {"click": "clicked"}, max_rows=300)
    assert inferred.sample_rows == 300
    cut = inferred.time_cut
    assert cut.cutoff == 1_700_006_400 + 8 * 86_400  # the last 2 of 10 days: 20% of all rows
    assert cut.eval_share == pytest.approx(np.mean(np.array(times) >= cut.cutoff)) == pytest.approx(0.2)
    assert "20% of all 1,000 rows with a time" in cut.reason and "only the first rows" not in cut.reason


def test_read_column_streams_one_column_of_every_file(tmp_path):
    from feature_specs.sample import read_column

    pq.write_table(pa.Table.from_pylist([{"a": i, "b": 2 * i} for i in range(5)]), tmp_path / "p-0.parquet")
    pq.write_table(pa.Table.from_pylist([{"a": i} for i in range(5, 8)]), tmp_path / "p-1.parquet")
    assert read_column(str(tmp_path / "p-*.parquet"), "b") == ([0, 2, 4, 6, 8, None, None, None], True)
    assert read_column(str(tmp_path / "p-*.parquet"), "a", max_rows=6) == ([0, 1, 2, 3, 4, 5], False)
    path = write_jsonl(tmp_path / "j.jsonl", [{"a": "1"}, {"b": 2}, {"a": "3"}])
    assert read_column(path, "a", convert=lambda v: v and int(v)) == ([1, None, 3], True)


def test_requests_that_straddle_the_cut_are_counted(tmp_path):
    base = 1_709_251_200  # seconds; each request spans a few minutes around its midnight
    times, requests = [], []
    for day in range(8):
        for i in range(40):
            times.append(base + day * 86_400 + (i % 4 - 2) * 60)
            requests.append(f"r{day}_{i // 4}")
    rows = rows_with(times, request=requests)
    inferred = infer_spec(write_csv(tmp_path / "r.csv", rows), {"click": "clicked"}, group_by="request")
    assert "sampled request groups straddle the cut" in inferred.time_cut.reason


@pytest.mark.parametrize("values, unit", [
    ([1_700_000_000 + i for i in range(20)], "seconds"),
    ([1_700_000_000_000 + i for i in range(20)], "milliseconds"),
    ([20240101, 20240102, 20240131], "yyyymmdd"),
    ([20240101, 20240132], None),  # no 32nd day: a code
    ([1, 2, 3, 4], None),
])
def test_time_units(values, unit):
    assert time_unit(profile_column("when", values)) == unit
