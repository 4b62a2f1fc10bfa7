"""End to end: preprocess() on tiny CSV and Parquet logs with bad rows, checked file by file."""

import collections
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec_reader import bundled_spec_path, spec_from_dict
from pipelines import EmptyTrainSplitError, preprocess, run
from pipelines.split import EVAL, TRAIN, split_index

HEADER = ("user_id,item_id,item_category,device,hour,user_age,item_price,item_popularity,position,"
          "request_id,timestamp,clicked,dwell_seconds")
GOOD_LINES = [
    "u1,i1,c1,ios,8,31,10.0,0.10,1,r0,1000,1,12.5",
    "u1,i2,c1,ios,8,31,20.0,0.20,2,r0,1000,0,0",
    "u2,i1,c2,android,9,45,5.5,0.30,1,r1,1001,0,0",
    "u2,i2,c2,android,9,45,7.25,0.40,2,r1,1001,1,30",
    "u3,i1,c1,web,10,,3.0,0.50,1,r2,1002,0,0",
    "u3,i3,c3,web,10,,100.0,0.60,2,r2,1002,1,4",
    "u1,i2,c1,ios,11,31,1.0,0.70,1,r3,1003,0,0",
    "u4,i1,\"c,4\",ios,12,60,2.0,0.80,1,r4,1004,0,0",
    "u4,i2,c2,ios,12,60,0,0.90,2,r4,1004,1,2.5",
    "u2,i1,c1,android,13,45,4.0,0.15,1,r5,1005,0,0",
    "u5,i2,c1,web,14,22,8.0,0.25,1,r6,1006,0,0",
]
BAD_LINES = {
    'this is not, a valid "row': "unparseable_line",
    ",i1,c1,ios,8,31,10.0,0.10,1,r7,1007,0,0": "missing",
    "u1,i1,c1,ios,abc,31,10.0,0.10,1,r7,1007,0,0": "wrong_type",
    "u1,i1,c1,ios,8,31.5,10.0,0.10,1,r7,1007,0,0": "wrong_type",
    "u1,i1,c1,ios,8,31,inf,0.10,1,r7,1007,0,0": "not_finite",
    "u1,i1,c1,ios,8,31,10.0,0.10,1,r7,1007,2,0": "out_of_range",
}
INT_COLUMNS = ("hour", "user_age", "position", "timestamp", "clicked")
FLOAT_COLUMNS = ("item_price", "item_popularity", "dwell_seconds")


def typed(line):
    """The row validation should produce for a good line (user_age defaults to 35)."""
    values = pd.read_csv(io.StringIO(HEADER + "\n" + line), dtype=str, keep_default_na=False)
    row = values.iloc[0].to_dict()
    for name in INT_COLUMNS:
        row[name] = int(row[name]) if row[name] else 35
    for name in FLOAT_COLUMNS:
        row[name] = float(row[name])
    return row


def read_examples(workdir, split, spec):
    files = tf.io.gfile.glob(workdir.split_pattern(split))
    assert files, f"no {split} shards"
    parse_spec = {c.name: tf.io.FixedLenFeature([], {"string": tf.string, "float": tf.float32}.get(c.dtype, tf.int64))
                  for c in spec.all_columns}
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(record, parse_spec)
        rows.append({k: (v.numpy().decode() if v.dtype == tf.string else v.numpy().item()) for k, v in parsed.items()})
    return rows


def read_rejected(workdir):
    lines = []
    for path in tf.io.gfile.glob(workdir.rejected_pattern):
        with tf.io.gfile.GFile(path) as handle:
            lines += [json.loads(line) for line in handle if line.strip()]
    return lines


def read_text(path):
    with tf.io.gfile.GFile(path) as handle:
        return handle.read()


def expected_vocabulary(rows, feature):
    counts = collections.Counter(row[feature.name] for row in rows)
    kept = sorted(((v, n) for v, n in counts.items() if n >= feature.min_count), key=lambda vn: (-vn[1], vn[0]))
    return [str(v) for v, _ in kept[:feature.top_k]]


def canonical(rows):
    """Rows as sortable tuples, floats rounded to float32 precision."""
    return sorted(tuple((k, round(v, 4) if isinstance(v, float) else v) for k, v in sorted(r.items())) for r in rows)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, clicklog_spec):
    root = tmp_path_factory.mktemp("csv")
    lines = [HEADER] + GOOD_LINES[:6] + list(BAD_LINES) + [""] + GOOD_LINES[6:]
    (root / "log.csv").write_text("\n".join(lines) + "\n")
    workdir = Workdir(str(root / "work"))
    report = preprocess(clicklog_spec, str(root / "*.csv"), workdir.root, max_reject_rate=1.0)
    return report, workdir


def test_report_counts_reconcile(csv_run):
    report, workdir = csv_run
    assert report["input_rows"] == len(GOOD_LINES) + len(BAD_LINES)  # the blank line is no row
    assert report["written"]["total"] == len(GOOD_LINES)
    assert report["rejected"]["total"] == len(BAD_LINES)
    assert report["input_rows"] == report["written"]["total"] + report["rejected"]["total"]
    assert report["reconciled"] is True
    assert report["rejected"]["by_reason"] == {"unparseable_line": 1, "unknown_column": 0, "missing": 1, "wrong_type": 2,
                                               "not_finite": 1, "out_of_range": 1, "too_long": 0}
    assert report["rejected"]["by_field"] == {"user_id": 1, "hour": 1, "user_age": 1, "item_price": 1, "clicked": 1}
    assert json.loads(read_text(workdir.report_json)) == report


def test_every_rejected_row_is_written_unchanged_with_its_reason(csv_run):
    _, workdir = csv_run
    rejected = read_rejected(workdir)
    assert sorted((r["row"], r["reason"]) for r in rejected) == sorted(BAD_LINES.items())
    for r in rejected:
        assert r["source"].endswith("log.csv") and r["message"]
        assert (r["field"] is None) == (r["reason"] == "unparseable_line")


def test_tfrecords_hold_exactly_the_valid_rows_in_their_split(csv_run, clicklog_spec):
    _, workdir = csv_run
    expected = [typed(line) for line in GOOD_LINES]
    train = [r for r in expected if split_index(r, clicklog_spec.split) == TRAIN]
    eval_ = [r for r in expected if split_index(r, clicklog_spec.split) == EVAL]
    assert train and eval_
    assert canonical(read_examples(workdir, "train", clicklog_spec)) == canonical(train)
    assert canonical(read_examples(workdir, "eval", clicklog_spec)) == canonical(eval_)


def test_vocabularies_and_statistics_come_from_the_train_split(csv_run, clicklog_spec):
    report, workdir = csv_run
    train = [r for r in map(typed, GOOD_LINES) if split_index(r, clicklog_spec.split) == TRAIN]
    statistics = Statistics.from_json(read_text(workdir.statistics_json))
    assert statistics.train_rows == report["written"]["train"] == len(train)
    for feature in clicklog_spec.features:
        if feature.transform == "vocabulary":
            lines = read_text(workdir.vocabulary_file(feature.name)).splitlines()
            assert lines == expected_vocabulary(train, feature), feature.name
            assert statistics.vocabulary_sizes[feature.name] == len(lines)
    age = np.array([r["user_age"] for r in train], dtype=float)
    assert statistics.numeric["user_age"].mean == pytest.approx(age.mean())
    assert statistics.numeric["user_age"].variance == pytest.approx(age.var())
    price = np.array([r["item_price"] for r in train])
    assert statistics.numeric["item_price"].mean == pytest.approx(np.log1p(price).mean())
    assert (statistics.numeric["item_price"].min, statistics.numeric["item_price"].max) == (price.min(), price.max())
    boundaries = statistics.quantiles["item_popularity"]
    assert boundaries == sorted(set(boundaries)) and 0 < len(boundaries) <= 15
    assert set(statistics.numeric) == {"user_age", "item_price"}


def test_spec_json_round_trips(csv_run, clicklog_spec):
    _, workdir = csv_run
    assert spec_from_dict(json.loads(read_text(workdir.spec_json))) == clicklog_spec


def test_parquet_input_gives_the_same_rows(tmp_path, clicklog_spec):
    good = pd.DataFrame([typed(line) for line in GOOD_LINES])
    bad = good.iloc[:3].copy()
    bad.loc[bad.index[0], "user_id"] = None  # missing
    bad.loc[bad.index[1], "item_price"] = math.inf  # not_finite
    bad.loc[bad.index[2], "clicked"] = 2  # out_of_range
    frame = pd.concat([good, bad], ignore_index=True)
    frame["user_age"] = frame["user_age"].astype("Int64")
    frame.loc[4, "user_age"] = None  # optional: default 35 (as in the CSV)
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    workdir = Workdir(str(tmp_path / "work"))
    report = preprocess(clicklog_spec, str(tmp_path / "*.parquet"), workdir, max_reject_rate=0.25)
    assert (report["input_rows"], report["written"]["total"], report["rejected"]["total"]) == (14, 11, 3)
    rejected = read_rejected(workdir)
    assert sorted(r["reason"] for r in rejected) == ["missing", "not_finite", "out_of_range"]
    not_finite = next(r for r in rejected if r["reason"] == "not_finite")
    assert not_finite["row"]["item_price"] == "inf" and not_finite["row"]["user_id"] == "u1"
    everything = read_examples(workdir, "train", clicklog_spec) + read_examples(workdir, "eval", clicklog_spec)
    assert canonical(everything) == canonical([typed(line) for line in GOOD_LINES])


def test_empty_train_split_fails_but_still_writes_valid_artifacts(tmp_path, clicklog_spec):
    data = clicklog_spec.to_dict()
    data["split"] = {"method": "timestamp", "key": "timestamp", "cutoff": 0}  # everything to eval
    spec = spec_from_dict(data)
    (tmp_path / "log.csv").write_text("\n".join([HEADER] + GOOD_LINES[:4]) + "\n")
    workdir = Workdir(str(tmp_path / "work"))
    with pytest.raises(EmptyTrainSplitError, match="no rows were written to the train split"):
        preprocess(spec, str(tmp_path / "log.csv"), workdir)
    report = json.loads(read_text(workdir.report_json))
    assert report["status"] == "failed" and report["written"] == {"train": 0, "eval": 4, "total": 4}
    statistics = Statistics.from_json(read_text(workdir.statistics_json))
    assert statistics.train_rows == 0 and statistics.numeric["user_age"].count == 0
    assert read_text(workdir.vocabulary_file("user_id")) == ""
    assert read_examples(workdir, "train", spec) == []
    assert len(read_examples(workdir, "eval", spec)) == 4


def test_cli_rerun_replaces_outputs_and_is_deterministic(tmp_path, clicklog_spec):
    (tmp_path / "a.csv").write_text("\n".join([HEADER] + GOOD_LINES[:5]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join([HEADER] + GOOD_LINES[5:] + list(BAD_LINES)[:2]) + "\n")
    workdir = Workdir(str(tmp_path / "work"))
    argv = ["--spec", bundled_spec_path("clicklog"), "--input", str(tmp_path / "*.csv"), "--workdir", workdir.root,
            "--max_reject_rate=0.2"]
    first = run(argv)
    before = {split: canonical(read_examples(workdir, split, clicklog_spec)) for split in ("train", "eval")}
    vocab = read_text(workdir.vocabulary_file("item_id"))
    stale = workdir.split_prefix("train") + "-00007-of-00009.tfrecord.gz"
    tf.io.gfile.copy(tf.io.gfile.glob(workdir.split_pattern("train"))[0], stale)
    second = run(argv + ["--direct_num_workers=1"])
    assert not tf.io.gfile.exists(stale)
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in second.items() if k != "seconds"}
    assert {split: canonical(read_examples(workdir, split, clicklog_spec)) for split in ("train", "eval")} == before
    assert read_text(workdir.vocabulary_file("item_id")) == vocab


def test_input_problems_fail_before_the_pipeline(tmp_path, clicklog_spec):
    with pytest.raises(FileNotFoundError, match="no input file"):
        preprocess(clicklog_spec, str(tmp_path / "*.csv"), str(tmp_path / "work"))
    (tmp_path / "log.csv").write_text("user_id,item_id\nu1,i1\n")
    with pytest.raises(ValueError, match="required by the spec"):
        preprocess(clicklog_spec, str(tmp_path / "log.csv"), str(tmp_path / "work"))
    with pytest.raises(SystemExit):
        run(["--spec", bundled_spec_path("clicklog")])
