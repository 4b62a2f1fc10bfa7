"""Label join: impressions + click and dwell events -> labels, orphans aside, window applied."""

import json

import apache_beam as beam
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from feature_specs.artifacts import Workdir
from feature_specs.spec import EventSource, SpecError, Sources
from feature_specs.spec_reader import spec_from_dict
from data_sets.clicklog import clicklog_tables
from data_sets.clicklog_events import generate_clicklog_events
from pipelines import preprocess
from pipelines.join import JoinLabels, aggregate_label
from pipelines.records import RawRecord
from test_preprocess import canonical, read_examples

SOURCES = {"impression_id": "impression_id", "timestamp": "timestamp", "attribution_window_seconds": 1800,
           "events": [{"name": "clicks", "label": "clicked"},
                      {"name": "dwell", "label": "dwell_seconds", "aggregate": "sum", "value": "seconds"}]}


@pytest.fixture(scope="module")
def events_spec(clicklog_spec):
    data = clicklog_spec.to_dict()
    data["columns"].append({"name": "impression_id", "type": "string"})
    data["sources"] = SOURCES
    return spec_from_dict(data)


def test_sources_section_is_read_and_checked(events_spec):
    assert events_spec.sources == Sources("impression_id", "timestamp", 1800, (
        EventSource("clicks", "clicked"), EventSource("dwell", "dwell_seconds", "sum", "seconds")))
    assert spec_from_dict(events_spec.to_dict()) == events_spec
    data = events_spec.to_dict()
    data["sources"]["events"][1]["aggregate"] = "sum"
    data["sources"]["events"][1].pop("value")
    with pytest.raises(SpecError, match=r"sources.events\[1\].value"):
        spec_from_dict(data)
    data["sources"] = {**SOURCES, "impression_id": "nope"}
    with pytest.raises(SpecError, match="sources.impression_id"):
        spec_from_dict(data)


def test_aggregate_label():
    events = [{"seconds": 2.5}, {"seconds": "4"}, {"seconds": None}]
    assert aggregate_label(EventSource("c", "l"), events) == 1
    assert aggregate_label(EventSource("c", "l"), []) == 0
    assert aggregate_label(EventSource("c", "l", "count"), events) == 3
    assert aggregate_label(EventSource("c", "l", "sum", "seconds"), events) == 6.5
    assert aggregate_label(EventSource("c", "l", "max", "seconds"), events) == 4.0


def test_join_window_orphans_and_passthrough(events_spec, test_pipeline):
    imp = lambda i, ts: RawRecord("imp", {"impression_id": i, "timestamp": ts}, {"impression_id": i, "timestamp": ts})
    ev = lambda i, ts, **kw: RawRecord("ev", {"impression_id": i, "timestamp": ts, **kw},
                                       {"impression_id": i, "timestamp": ts, **kw})
    impressions = [imp("a", 100), imp("b", 100), imp("b", 100), imp("c", "soon"), imp(None, 5),
                   RawRecord("imp", "garbage", None, "bad")]
    clicks = [ev("a", 150), ev("a", 100 + 1801), ev("b", 99), ev("zz", 1), ev(None, 1), RawRecord("ev", "x", None, "bad")]
    dwell = [ev("a", 160, seconds=3.0), ev("a", 170, seconds=4.5)]
    with test_pipeline() as p:
        labelled, orphans, stats = {
            "impressions": p | "I" >> beam.Create(impressions), "clicks": p | "C" >> beam.Create(clicks),
            "dwell": p | "D" >> beam.Create(dwell)} | JoinLabels(events_spec.sources)
        assert_that(labelled | beam.Map(lambda r: r.values), equal_to([
            {"impression_id": "a", "timestamp": 100, "clicked": 1, "dwell_seconds": 7.5},
            {"impression_id": "b", "timestamp": 100, "clicked": 0, "dwell_seconds": 0.0},
            {"impression_id": "b", "timestamp": 100, "clicked": 0, "dwell_seconds": 0.0},
            {"impression_id": "c", "timestamp": "soon"},  # no time: validation rejects it
            {"impression_id": None, "timestamp": 5}, None]), label="EveryImpressionOnce")
        assert_that(orphans | beam.Map(lambda line: (json.loads(line)["event_source"], json.loads(line)["reason"])),
                    equal_to([("clicks", "no_impression"), ("clicks", "bad_event"), ("clicks", "bad_event")]),
                    label="Orphans")
        assert_that(stats, equal_to([{
            "attributed_events_clicks": 1, "attributed_events_dwell": 2, "bad_events_clicks": 2,
            "joined_impressions": 4, "orphan_events_clicks": 1, "outside_window_clicks": 3}]), label="Stats")


def test_preprocess_with_events_gives_the_clicklog_labels(tmp_path, events_spec, clicklog_spec):
    raw = tmp_path / "raw"
    paths = generate_clicklog_events(str(raw), rows=300, seed=5, chunk_rows=150, orphan_fraction=0.02)
    workdir = Workdir(str(tmp_path / "work"))
    report = preprocess(events_spec, str(raw / "impressions-*.parquet"), workdir,
                        beam_args=[f"--events=clicks={raw}/clicks-*.jsonl", f"--events=dwell={raw}/dwell-*.jsonl"])
    orphans = sum(1 for p in paths["clicks"] for line in open(p) if "orphan-" in line)
    assert orphans > 0 and report["join"]["orphan_events_clicks"] == orphans
    assert report["join"]["joined_impressions"] == report["input_rows"] == report["written"]["total"] == 300
    assert "outside_window_clicks" not in report["join"]
    lines = [json.loads(line) for p in tf.io.gfile.glob(workdir.orphan_events_pattern) for line in tf.io.gfile.GFile(p)]
    assert len(lines) == orphans and {line["reason"] for line in lines} == {"no_impression"}
    truth = pa.concat_tables(clicklog_tables(300, seed=5, chunk_rows=150)).to_pandas()
    truth["impression_id"] = truth["request_id"] + "-" + truth["position"].astype(str)
    written = read_examples(workdir, "train", events_spec) + read_examples(workdir, "eval", events_spec)
    assert canonical(written) == canonical(truth.to_dict("records"))
    with pytest.raises(ValueError, match="--events dwell=PATTERN"):
        preprocess(events_spec, str(raw / "impressions-*.parquet"), workdir,
                   event_inputs={"clicks": str(raw / "clicks-*.jsonl")})
