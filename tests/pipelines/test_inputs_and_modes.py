"""JSONL and TFRecord inputs, unknown columns, the reject threshold, reuse mode, data quality."""

import json
import math
import pickle

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec_reader import spec_from_dict
from pipelines import RejectRateError, preprocess
from pipelines.options import infer_input_format
from pipelines.quality import EXACT_LIMIT, DistinctSketch, Profile
from pipelines.read import ReadRecords, parse_example, parse_json_line
from pipelines.records import RawRecord
from pipelines.validate import check_record, count_outside, reference_checks

from test_preprocess import GOOD_LINES, HEADER, canonical, read_examples, read_text

TINY_ROW = {"user": "u1", "hour": 7, "age": 41, "price": 9.5, "pop": 0.25, "query": "shoes",
            "position": 2, "request_id": "r1", "ts": 1700000000, "clicked": 1, "dwell": 12.5}


def tiny_rows(n):
    return [{**TINY_ROW, "user": f"u{i % 3}", "hour": i % 24, "request_id": f"r{i}", "pop": i / 10}
            for i in range(n)]


def test_infer_new_formats():
    assert infer_input_format("logs/*.jsonl") == infer_input_format("logs/*.ndjson.gz") == "jsonl"
    assert infer_input_format("gs://b/*.tfrecord.gz") == infer_input_format("x.tfrecords") == "tfrecord"


def test_parse_json_line():
    assert parse_json_line("f", b'{"a": 1, "b": "x"}') == RawRecord("f", '{"a": 1, "b": "x"}', {"a": 1, "b": "x"})
    assert math.isnan(parse_json_line("f", '{"a": NaN}').values["a"])  # rejected later as not_finite
    for line, error in [('{"a": 1', "not valid JSON"), ("[1, 2]", "JSON list, not an object"),
                        (b"\xff", "not valid UTF-8")]:
        record = parse_json_line("f", line)
        assert record.values is None and error in record.error


def example(**features):
    ex = tf.train.Example()
    for name, values in features.items():
        feature = ex.features.feature[name]
        for value in values:
            if isinstance(value, bytes):
                feature.bytes_list.value.append(value)
            elif isinstance(value, float):
                feature.float_list.value.append(value)
            else:
                feature.int64_list.value.append(value)
    return ex.SerializeToString()


def test_parse_example():
    record = parse_example("f", example(a=[b"x"], b=[3], c=[0.1], d=[1, 2], e=[]))
    assert record.values == {"a": b"x", "b": 3, "c": 0.1, "d": [1, 2], "e": None}
    bad = parse_example("f", b"\xff\xff\xff")
    assert bad.values is None and bad.row == b"\xff\xff\xff" and "tf.train.Example" in bad.error


def test_read_jsonl_and_tfrecord(tmp_path, test_pipeline):
    (tmp_path / "a.jsonl").write_text('{"id": 1, "v": "x"}\n\nnot json\n')
    with tf.io.TFRecordWriter(str(tmp_path / "b.tfrecord.gz"), options="GZIP") as writer:
        writer.write(example(id=[2], v=[b"y"]))
        writer.write(b"garbage")
    with test_pipeline() as p:
        jsonl = p | "J" >> ReadRecords(str(tmp_path / "*.jsonl"), "jsonl")
        tfrecord = p | "T" >> ReadRecords(str(tmp_path / "*.tfrecord.gz"), "tfrecord")
        assert_that(jsonl | "JV" >> beam.Map(lambda r: (r.row, r.values)),
                    equal_to([('{"id": 1, "v": "x"}', {"id": 1, "v": "x"}), ("not json", None)]), label="jsonl")
        assert_that(tfrecord | "TV" >> beam.Map(lambda r: (r.source.endswith("b.tfrecord.gz"), r.values)),
                    equal_to([(True, {"id": 2, "v": b"y"}), (True, None)]), label="tfrecord")


def test_unknown_columns_are_ignored_or_rejected(tiny_spec):
    record = RawRecord("f", "line", {**TINY_ROW, "zeta": 1, "extra": "x"})
    assert check_record(record, tiny_spec.all_columns) == TINY_ROW
    known = frozenset(c.name for c in tiny_spec.all_columns)
    rejection = check_record(record, tiny_spec.all_columns, known_names=known)
    assert (rejection.reason, rejection.field) == ("unknown_column", "extra")
    assert "extra, zeta" in rejection.message
    assert check_record(RawRecord("f", "line", dict(TINY_ROW)), tiny_spec.all_columns, known_names=known) == TINY_ROW


def test_jsonl_run_ignores_and_counts_unknown_columns_and_profiles(tmp_path, tiny_spec):
    rows = tiny_rows(12)
    rows[0]["extra"] = "x"
    rows[1]["extra"] = "y"
    rows[2]["age"] = None  # optional: defaulted, counted as missing
    lines = [json.dumps(r) for r in rows] + ['{"user": "u9", "hour": "late"}']
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    workdir = Workdir(str(tmp_path / "work"))
    report = preprocess(tiny_spec, str(tmp_path / "*.jsonl"), workdir, max_reject_rate=0.1)
    assert (report["input_rows"], report["written"]["total"], report["rejected"]["by_reason"]["wrong_type"]) == (13, 12, 1)
    quality = report["data_quality"]
    assert quality["unknown_columns"] == {"extra": 2}
    assert quality["profiled_rows"] == 13
    assert quality["columns"]["age"]["missing"] == 2  # one null, and the rejected row lacks it
    assert quality["columns"]["dwell"]["missing"] == 1  # the rejected row lacks it
    assert quality["columns"]["user"]["distinct"] == 3 and quality["columns"]["user"]["distinct_exact"]
    assert (quality["columns"]["hour"]["min"], quality["columns"]["hour"]["max"]) == (0, 11)
    assert json.loads(read_text(workdir.report_json)) == report


def test_reject_policy_and_threshold_fail_after_writing_the_report(tmp_path, capsys, tiny_spec):
    spec = spec_from_dict({**tiny_spec.to_dict(), "pipeline": {"unknown_columns": "reject", "max_reject_rate": 0.25}})
    rows = tiny_rows(8)
    for row in rows[:3]:
        row["extra"] = 1
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    workdir = Workdir(str(tmp_path / "work"))
    with pytest.raises(RejectRateError, match=r"3 of 8 input rows \(37.50%\).*max_reject_rate 25.00%.*unknown_column 3"):
        preprocess(spec, str(tmp_path / "log.jsonl"), workdir)
    report = json.loads(read_text(workdir.report_json))
    assert report["reject_rate_ok"] is False and report["rejected"]["by_reason"]["unknown_column"] == 3
    assert report["rejected"]["by_field"] == {"extra": 3} and report["written"]["total"] == 5
    assert "FAIL" in capsys.readouterr().out
    # --max_reject_rate among the Beam flags (as `mmoe preprocess` passes them) overrides the spec
    assert preprocess(spec, str(tmp_path / "log.jsonl"), workdir, beam_args=["--max_reject_rate=0.5"])["reject_rate_ok"]


def test_reuse_run_writes_the_same_data_and_artifacts(tmp_path, clicklog_spec):
    (tmp_path / "log.csv").write_text("\n".join([HEADER] + GOOD_LINES) + "\n")
    first, second = Workdir(str(tmp_path / "first")), Workdir(str(tmp_path / "second"))
    analyzed = preprocess(clicklog_spec, str(tmp_path / "log.csv"), first)
    reused = preprocess(clicklog_spec, str(tmp_path / "log.csv"), second,
                        beam_args=[f"--reuse_artifacts={first.artifacts_dir}"])
    assert (analyzed["mode"], reused["mode"]) == ("analyze", "reuse")
    for split in ("train", "eval"):
        assert canonical(read_examples(second, split, clicklog_spec)) == canonical(read_examples(first, split, clicklog_spec))
    paths = [lambda w: w.statistics_json, lambda w: w.spec_json] + [
        (lambda w, name=f.name: w.vocabulary_file(name)) for f in clicklog_spec.features if f.transform == "vocabulary"]
    for path in paths:
        assert read_text(path(second)) == read_text(path(first)), path(first)
    # values outside the reused artifacts, counted per feature over every written row
    statistics = Statistics.from_json(read_text(first.statistics_json))
    vocabularies = {f.name: read_text(first.vocabulary_file(f.name)).split("\n")[:-1]
                    for f in clicklog_spec.features if f.transform == "vocabulary"}
    checks = reference_checks(clicklog_spec, vocabularies, statistics)
    expected = {}
    for row in read_examples(first, "train", clicklog_spec) + read_examples(first, "eval", clicklog_spec):
        count_outside(row, checks, expected)
    assert expected and reused["data_quality"]["outside_artifacts"] == expected
    assert analyzed["data_quality"]["outside_artifacts"] == {}


def test_reuse_needs_artifacts_of_the_same_features(tmp_path, clicklog_spec, tiny_spec):
    (tmp_path / "log.csv").write_text("\n".join([HEADER] + GOOD_LINES) + "\n")
    with pytest.raises(FileNotFoundError, match="spec.json"):
        preprocess(clicklog_spec, str(tmp_path / "log.csv"), str(tmp_path / "w"), reuse_artifacts=str(tmp_path / "none"))
    other = Workdir(str(tmp_path / "other"))
    tf.io.gfile.makedirs(other.artifacts_dir)
    for path, text in ((other.spec_json, tiny_spec.to_json()), (other.statistics_json, Statistics().to_json())):
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(text)
    with pytest.raises(ValueError, match="features differ"):
        preprocess(clicklog_spec, str(tmp_path / "log.csv"), str(tmp_path / "w"), reuse_artifacts=other.root)


def test_count_outside():
    outside = {}
    checks = {"device": frozenset({"ios", "web"}), "hour": frozenset({"7"}), "price": (1.0, 5.0)}
    count_outside({"device": "ios", "hour": 7, "price": 1.0}, checks, outside)
    count_outside({"device": "tv", "hour": 8, "price": 5.5}, checks, outside)
    assert outside == {"device": 1, "hour": 1, "price": 1}


def test_distinct_sketch_exact_then_approximate_and_mergeable():
    small = DistinctSketch()
    for value in ["a", "b", "a", 3]:
        small.add(value)
    assert small.estimate() == 3 and small.is_exact
    parts = [DistinctSketch() for _ in range(3)]
    for i in range(60_000):
        parts[i % 3].add(f"id{i % 30_000}")
    merged = Profile(), Profile()
    merged[0].distinct["x"] = parts[0]
    for part in parts[1:]:
        other = Profile()
        other.distinct["x"] = part
        merged[0].merge(other)
    estimate = merged[0].distinct["x"].estimate()
    assert not merged[0].distinct["x"].is_exact and EXACT_LIMIT < estimate
    assert abs(estimate - 30_000) / 30_000 < 0.1


def test_distinct_sketch_depends_on_the_set_of_values_only():
    values = [f"v{i % 9_000}" for i in range(20_000)] + list(range(3_000))
    one_by_one, in_blocks, split = DistinctSketch(), DistinctSketch(), [DistinctSketch(), DistinctSketch()]
    for value in values:
        one_by_one.add(value)
    for start in range(0, len(values), 7_000):
        in_blocks.add_many(reversed(values[start:start + 7_000]))
    for i, value in enumerate(values):
        split[i % 2].add(value)
    split[0].merge(pickle.loads(pickle.dumps(split[1])))
    assert one_by_one.estimate() == in_blocks.estimate() == split[0].estimate()
    assert one_by_one.hashes.tolist() == in_blocks.hashes.tolist() == split[0].hashes.tolist()


def test_tfrecord_run_gives_the_same_rows(tmp_path, clicklog_spec):
    from test_preprocess import typed

    from pipelines.write import example_from_row

    rows = [typed(line) for line in GOOD_LINES]
    with tf.io.TFRecordWriter(str(tmp_path / "log.tfrecord.gz"), options="GZIP") as writer:
        for row in rows:
            writer.write(example_from_row(row, clicklog_spec.all_columns))
        writer.write(b"not an example")
    workdir = Workdir(str(tmp_path / "work"))
    report = preprocess(clicklog_spec, str(tmp_path / "*.tfrecord.gz"), workdir, max_reject_rate=0.1)
    assert (report["input_rows"], report["rejected"]["by_reason"]["unparseable_line"]) == (len(rows) + 1, 1)
    written = read_examples(workdir, "train", clicklog_spec) + read_examples(workdir, "eval", clicklog_spec)
    assert canonical(written) == canonical(rows)


def test_the_default_runner_takes_threads_for_large_inputs_only():
    from apache_beam.options.pipeline_options import DirectOptions

    from pipelines.run import DEFAULT_LOCAL_THREADS, THREADS_MIN_INPUT_BYTES, choose_local_threads, pipeline_options

    large = [THREADS_MIN_INPUT_BYTES // DEFAULT_LOCAL_THREADS] * DEFAULT_LOCAL_THREADS
    cases = [([], large, DEFAULT_LOCAL_THREADS), ([], [THREADS_MIN_INPUT_BYTES], 0), ([], large[:-1] + [0], 0),
             (["--direct_running_mode=in_memory"], large, 0), (["--direct_num_workers", "3"], large, 0),
             (["--runner=PortableRunner"], large, 0)]
    for beam_args, sizes, threads in cases:
        options = pipeline_options(beam_args)
        before = options.view_as(DirectOptions).direct_running_mode
        assert choose_local_threads(options, beam_args, sizes) == threads, (beam_args, sizes)
        mode = options.view_as(DirectOptions).direct_running_mode
        assert mode == ("multi_threading" if threads else before), (beam_args, sizes)
        if threads:
            assert options.view_as(DirectOptions).direct_num_workers == DEFAULT_LOCAL_THREADS
