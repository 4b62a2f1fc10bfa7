"""List-valued columns through the pipeline: read from CSV, JSONL and Parquet on both paths,
validated element by element, written as variable-length tf.Example features, and counted by
element in vocabularies."""

from __future__ import annotations

import collections
import glob
import gzip
import json

import pytest

from feature_specs.artifacts import Workdir
from feature_specs.example_proto import Example
from list_logs import expected_row, list_rows, list_spec, write_log
from pipelines.run import preprocess
from pipelines.tfrecord import read_records

ROWS = list_rows(120, seed=3)


def decoded_examples(workdir: Workdir, split: str) -> list[dict]:
    """Every Example of ``split`` as ``{name: [values]}`` (lists as written, scalars as one value)."""
    rows = []
    for path in sorted(glob.glob(workdir.split_pattern(split))):
        with gzip.open(path, "rb") as handle:
            for data in read_records(handle, path):
                example = Example()
                example.ParseFromString(data)
                row = {}
                for name, feature in example.features.feature.items():
                    kind = feature.WhichOneof("kind")
                    values = list(getattr(feature, kind).value)
                    row[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
                rows.append(row)
    return rows


def comparable(row: dict) -> str:
    keys = ("request_id", "user", "tags", "cats", "clicked")
    return json.dumps({k: row[k] if isinstance(row[k], list) and k in ("tags", "cats") else
                       (row[k][0] if isinstance(row[k], list) else row[k]) for k in keys}, sort_keys=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One preprocess per input format and path (batched default, row path ``--batch_rows 0``)."""
    spec = list_spec()
    out = {}
    for fmt in ("csv", "jsonl", "parquet"):
        path = write_log(ROWS, str(tmp_path_factory.mktemp(f"raw_{fmt}")), fmt)
        for batch_rows in ("4096", "0"):
            workdir = Workdir(str(tmp_path_factory.mktemp(f"run_{fmt}_{batch_rows}")))
            report = preprocess(spec, path, workdir, beam_args=[f"--batch_rows={batch_rows}"])
            out[fmt, batch_rows] = (workdir, report)
    return out


def test_every_format_and_path_writes_the_lists_as_variable_length_features(runs):
    expected = sorted(comparable(expected_row(r)) for r in ROWS)
    for key, (workdir, report) in runs.items():
        written = decoded_examples(workdir, "train") + decoded_examples(workdir, "eval")
        assert sorted(comparable(r) for r in written) == expected, key
        assert report["input_rows"] == len(ROWS) and report["rejected"]["total"] == 0, key
        lengths = {len(r["tags"]) for r in written}
        assert 0 in lengths and 4 in lengths and max(lengths) == 4, "empty lists kept, long ones cut to max_length"


def test_vocabularies_count_elements_identically_on_every_format_and_path(runs):
    vocabularies = {}
    for key, (workdir, _) in runs.items():
        with open(workdir.vocabulary_file("tags")) as handle:
            vocabularies[key] = handle.read().splitlines()
        counts = collections.Counter(t for r in decoded_examples(workdir, "train") for t in r["tags"])
        assert vocabularies[key] == [t for t, _ in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0]))], key
    assert len({tuple(v) for v in vocabularies.values()}) == 1, vocabularies


@pytest.mark.parametrize("batch_rows", ["4096", "0"])
def test_bad_elements_and_over_long_lists_are_rejected_naming_the_field(tmp_path, batch_rows):
    rows = list_rows(40, seed=5)
    rows[1]["cats"] = [1, 2, 3, 4]  # over max_length 3, and cats' too_long is reject
    rows[2]["cats"] = [7, 2000]  # element above max 1000
    rows[3]["cats"] = ["5", "x"]  # written as the text "5;x": not an integer
    bad_csv = write_log(rows, str(tmp_path / "raw"), "csv")
    workdir = Workdir(str(tmp_path / "run"))
    report = preprocess(list_spec(), bad_csv, workdir, beam_args=[f"--batch_rows={batch_rows}"], max_reject_rate=0.5)
    rejected = {}
    for path in glob.glob(workdir.rejected_pattern):
        with open(path) as handle:
            for line in handle:
                item = json.loads(line)
                rejected[item["reason"]] = (item["field"], item["message"])
    assert rejected == {
        "too_long": ("cats", "cats: 4 elements, more than max_length 3 (list.too_long is reject)"),
        "out_of_range": ("cats", "cats[1]=2000 is above the maximum 1000"),
        "wrong_type": ("cats", "cats[1]: 'x' is not an integer"),
    }
    assert report["rejected"]["total"] == 3 and report["written"]["train"] + report["written"]["eval"] == 37


@pytest.mark.parametrize("batch_rows", ["4096", "0"])
def test_tf_example_input_with_lists_of_any_length_reads_back_the_same_rows(runs, tmp_path, batch_rows):
    """The pipeline's own output as input: empty, one-element and longer lists read back unchanged."""
    source, _ = runs["parquet", "4096"]
    workdir = Workdir(str(tmp_path / "again"))
    report = preprocess(list_spec(), source.split_pattern("train"), workdir, input_format="tfrecord",
                        beam_args=[f"--batch_rows={batch_rows}"])
    assert report["rejected"]["total"] == 0
    again = decoded_examples(workdir, "train") + decoded_examples(workdir, "eval")
    assert sorted(map(comparable, again)) == sorted(map(comparable, decoded_examples(source, "train")))
    assert {len(r["cats"]) for r in again} == {0, 1, 2, 3}


def test_the_vectorized_encoder_writes_the_row_encoders_bytes_for_lists():
    import pyarrow as pa

    from pipelines.example_encoding import encode_examples
    from pipelines.validate_batches import valid_schema
    from pipelines.write import example_from_row

    spec = list_spec()
    rows = [expected_row(r) for r in list_rows(30, seed=8)]
    rows[0]["tags"], rows[0]["cats"] = ["é", "x" * 200], [2**40, 0]  # multi-byte text, a long element, a wide varint
    table = pa.Table.from_pylist(rows, schema=valid_schema(spec.all_columns))
    for part, expected in ((table, rows), (table.slice(7, 11), rows[7:18])):
        assert encode_examples(part, spec.all_columns).to_pylist() == [example_from_row(r, spec.all_columns)
                                                                       for r in expected]


@pytest.mark.parametrize("fmt,batch_rows", [("jsonl", "4096"), ("parquet", "4096"), ("parquet", "0")])
def test_reuse_mode_counts_list_elements_outside_the_reused_vocabulary(runs, tmp_path, fmt, batch_rows):
    first, _ = runs["parquet", "4096"]
    with open(first.vocabulary_file("tags")) as handle:
        known = set(handle.read().split())
    rows = list_rows(60, seed=9)
    for i, row in enumerate(rows[:10]):
        row["tags"] = row["tags"][:2] + ["brand_new"] * (i % 3)
    expected = sum(1 for r in rows for t in expected_row(r)["tags"] if t not in known)
    path = write_log(rows, str(tmp_path / "raw"), fmt)
    report = preprocess(list_spec(), path, Workdir(str(tmp_path / "day2")), reuse_artifacts=first.root,
                        beam_args=[f"--batch_rows={batch_rows}"])
    assert expected > 0 and report["data_quality"]["outside_artifacts"].get("tags") == expected
