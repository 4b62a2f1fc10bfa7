"""The clicklog in event-log form: impressions without labels, click and dwell events."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_sets.clicklog import clicklog_tables
from data_sets.clicklog_events import generate_clicklog_events


def read_jsonl(paths):
    return [json.loads(line) for path in paths for line in open(path, encoding="utf-8")]


def test_events_rebuild_the_labels_of_the_same_impressions(tmp_path):
    paths = generate_clicklog_events(str(tmp_path), rows=500, seed=3, chunk_rows=200)
    assert [len(v) for v in paths.values()] == [3, 3, 3]
    impressions = pd.concat([pd.read_parquet(p) for p in paths["impressions"]], ignore_index=True)
    truth = pa.concat_tables(clicklog_tables(500, seed=3, chunk_rows=200)).to_pandas()
    assert "clicked" not in impressions and impressions["impression_id"].is_unique
    pd.testing.assert_frame_equal(impressions.drop(columns="impression_id"),
                                  truth.drop(columns=["clicked", "dwell_seconds"]))
    shown = dict(zip(impressions["impression_id"], impressions["timestamp"]))
    clicks, dwell = read_jsonl(paths["clicks"]), read_jsonl(paths["dwell"])
    assert {c["impression_id"] for c in clicks} == set(impressions["impression_id"][truth["clicked"] == 1])
    assert all(1 <= c["timestamp"] - shown[c["impression_id"]] <= 120 for c in clicks)
    seconds = {d["impression_id"]: d["seconds"] for d in dwell}
    expected = dict(zip(impressions["impression_id"][truth["clicked"] == 1], truth["dwell_seconds"][truth["clicked"] == 1]))
    assert seconds == expected
    assert all(0 <= d["timestamp"] - shown[d["impression_id"]] <= 720 for d in dwell)


def test_orphans_and_late_clicks(tmp_path):
    paths = generate_clicklog_events(str(tmp_path), rows=2000, seed=1, orphan_fraction=0.01, late_fraction=0.5)
    clicks = read_jsonl(paths["clicks"])
    orphans = [c for c in clicks if c["impression_id"].startswith("orphan-")]
    assert 5 <= len(orphans) <= 40
    impressions = pd.concat([pd.read_parquet(p) for p in paths["impressions"]])
    shown = dict(zip(impressions["impression_id"], impressions["timestamp"]))
    late = np.mean([c["timestamp"] - shown[c["impression_id"]] > 86_400 for c in clicks if c not in orphans])
    assert 0.35 < late < 0.65
    with pytest.raises(ValueError, match="late_fraction"):
        generate_clicklog_events(str(tmp_path), rows=10, late_fraction=2)
