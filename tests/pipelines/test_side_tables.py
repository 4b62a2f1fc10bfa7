"""Side tables: the spec's tables: section, the join (side input and grouped, row and batched paths),
counts that reconcile, missing keys, duplicate keys and the table snapshot."""

import glob
import gzip
import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from feature_specs.artifacts import Workdir
from feature_specs.spec import SpecError
from feature_specs.spec_reader import spec_from_dict
from pipelines import preprocess
from pipelines.batches import RawBatch
from pipelines.options import OptionError
from pipelines.records import RawRecord
from pipelines.side_tables import (SIDE_INPUT_MAX_BYTES, DuplicateKeyError, JoinTable, choose_join)
from pipelines.tfrecord import read_records

MOVIES = ["movie_id,genres,year"] + [f"{m},A|B{m % 3},{1990 + m}" for m in range(10)] + ["bad,A,1"]
# 40 impressions of movies 0..11 (10 and 11 are not in the table), one bad key, one blank key
IMPRESSIONS = (["movie_id,user,like"] + [f"{i % 12},u{i % 5},{i % 2}" for i in range(40)]
               + ["x,u1,1", ",u1,1"])
MISSING = sum(1 for i in range(40) if i % 12 >= 10)  # impressions whose key the table lacks


def table_spec(root, missing_key="default", join="auto", **extra):
    return spec_from_dict({
        "name": "t",
        "features": [{"name": "movie_id", "type": "int", "transform": "vocabulary"},
                     {"name": "user", "type": "string", "transform": "vocabulary"},
                     {"name": "genres", "transform": "vocabulary"},
                     {"name": "year", "transform": "zscore"}],
        "columns": [{"name": "like", "type": "int", "min": 0, "max": 1}],
        "tables": [{"name": "movies", "key": "movie_id", "input": str(root / "movies.csv"), "missing_key": missing_key,
                    "join": join, "columns": [{"name": "genres", "type": "string", "list": {"separator": "|"}},
                                              {"name": "year", "type": "int", "required": False, "default": 0}],
                    **extra}],
        "tasks": [{"name": "like", "label": "like", "kind": "binary"}],
        "ranking": {"weights": {"like": 1.0}},
        "split": {"key": "user"},
        "pipeline": {"max_reject_rate": 1.0},
    })


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    (root / "movies.csv").write_text("\n".join(MOVIES) + "\n")
    (root / "imp.csv").write_text("\n".join(IMPRESSIONS) + "\n")
    return root


def written(workdir: Workdir) -> list[bytes]:
    records = []
    for split in ("train", "eval"):
        for path in glob.glob(workdir.split_pattern(split)):
            with gzip.open(path, "rb") as handle:
                records += list(read_records(handle, path))
    return sorted(records)


def rejected(workdir: Workdir) -> list[dict]:
    return sorted((json.loads(line) for path in glob.glob(workdir.rejected_pattern) for line in open(path)),
                  key=lambda r: (r["row"], r["reason"]))


RUNS = [(rule, join, batch) for rule in ("default", "reject") for join in ("side_input", "grouped") for batch in (0, 16)]


@pytest.fixture(scope="module")
def runs(logs):
    out = {}
    for rule, join, batch in RUNS:
        workdir = Workdir(str(logs / f"work_{rule}_{join}_{batch}"))
        report = preprocess(table_spec(logs, rule, join), str(logs / "imp.csv"), workdir.root,
                            beam_args=[f"--batch_rows={batch}"])
        out[rule, join, batch] = report, workdir
    return out


@pytest.mark.parametrize("rule,join,batch", RUNS)
def test_counts_reconcile_and_missing_keys_are_counted(runs, rule, join, batch):
    report, _ = runs[rule, join, batch]
    assert report["reconciled"] and report["input_rows"] == len(IMPRESSIONS) - 1
    assert report["tables"] == {"movies": {"rows": 10, "rejected_rows": 1, "looked_up": 40 - MISSING,
                                           "missing_key": MISSING, "join": join}}
    by_reason = report["rejected"]["by_reason"]
    assert (by_reason["wrong_type"], by_reason["missing"]) == (1, 1)  # "x" and the blank key, rejected by validation
    assert by_reason["missing_key"] == (MISSING if rule == "reject" else 0)
    assert report["written"]["total"] == 40 - by_reason["missing_key"]


@pytest.mark.parametrize("rule", ["default", "reject"])
def test_every_path_and_join_writes_the_same_rows(runs, rule):
    outputs = {(join, batch): (written(workdir), rejected(workdir))
               for (r, join, batch), (_, workdir) in runs.items() if r == rule}
    first = next(iter(outputs.values()))
    assert first[0] and all(out == first for out in outputs.values())


def test_missing_key_rejections_name_the_table_and_key(runs):
    _, workdir = runs["reject", "side_input", 16]
    missing = [r for r in rejected(workdir) if r["reason"] == "missing_key"]
    assert len(missing) == MISSING and missing[0]["field"] == "movie_id"
    assert missing[0]["row"] in IMPRESSIONS and "not in side table 'movies'" in missing[0]["message"]


def test_table_snapshot_and_rejected_table_rows(runs):
    _, workdir = runs["default", "grouped", 0]
    with open(workdir.table_snapshot("movies")) as handle:
        snapshot = sorted((json.loads(line) for line in handle), key=lambda r: r["movie_id"])
    assert snapshot[3] == {"movie_id": 3, "genres": ["A", "B0"], "year": 1993} and len(snapshot) == 10
    bad = [json.loads(line) for path in glob.glob(workdir.table_rejected_prefix("movies") + "-*.jsonl") for line in open(path)]
    assert [(b["row"], b["reason"], b["field"]) for b in bad] == [("bad,A,1", "wrong_type", "movie_id")]


def test_statistics_and_vocabularies_come_from_joined_rows(runs):
    _, workdir = runs["default", "side_input", 16]
    genres = open(workdir.vocabulary_file("genres")).read().split("\n")[:-1]
    assert genres[0] == "A" and sorted(genres[1:]) == ["B0", "B1", "B2"]
    stats = json.loads(open(workdir.statistics_json).read())
    year = stats["numeric"]["year"]
    # train rows of movies 10 and 11 took the default year 0
    assert year["count"] == stats["train_rows"] and year["min"] == 0.0 and year["max"] == 1999.0


@pytest.mark.parametrize("join", ["side_input", "grouped"])
@pytest.mark.parametrize("batch", [0, 16])
def test_duplicate_keys_fail_naming_table_file_and_key(logs, tmp_path, join, batch):
    (tmp_path / "movies.csv").write_text("\n".join(MOVIES + ["4,C,2000"]) + "\n")
    spec = table_spec(tmp_path, join=join)
    with pytest.raises(Exception, match=r"side table 'movies': key movie_id=4 is in .*movies\.csv") as caught:
        preprocess(spec, str(logs / "imp.csv"), str(tmp_path / "work"), beam_args=[f"--batch_rows={batch}"])
    assert isinstance(caught.value, DuplicateKeyError) or "DuplicateKeyError" in str(caught.value)


def test_the_impressions_own_value_wins(logs, tmp_path):
    (tmp_path / "movies.csv").write_text("\n".join(MOVIES) + "\n")
    (tmp_path / "imp.csv").write_text("movie_id,user,like,year\n1,u1,1,1800\n1,u2,0,\n")
    for batch in (0, 16):
        workdir = Workdir(str(tmp_path / f"w{batch}"))
        report = preprocess(table_spec(tmp_path), str(tmp_path / "imp.csv"), workdir.root,
                            beam_args=[f"--batch_rows={batch}", "--max_reject_rate=1"])
        year = json.loads(open(workdir.statistics_json).read())["numeric"]["year"]
        assert report["written"]["total"] == 2 and (year["min"], year["max"]) == (1800.0, 1991.0), year


def _record(line, **values):
    return RawRecord("imp.csv", line, values)


@pytest.mark.parametrize("join", ["side_input", "grouped"])
def test_join_table_transform(test_pipeline, tmp_path, join):
    spec = table_spec(tmp_path, missing_key="reject")
    table = spec.tables[0]
    with test_pipeline() as p:
        impressions = p | "Imp" >> beam.Create([_record("1,a", movie_id="1", user="a"), _record("7,b", movie_id="7", user="b"),
                                                _record("x,c", movie_id="x", user="c")])
        rows = p | "Rows" >> beam.Create([RawRecord("m.csv", "1,G|H,1999", {"movie_id": "1", "genres": "G|H", "year": "1999"})])
        joined, missing, typed, bad, stats = (impressions, rows) | JoinTable(spec, table, join, 0)
        assert_that(joined | beam.Map(lambda r: (r.row, r.values.get("genres"), r.values.get("year"))),
                    equal_to([("1,a", ["G", "H"], 1999), ("x,c", None, None)]), label="Joined")
        assert_that(missing | beam.Map(lambda r: (r.row, r.reason, r.field)),
                    equal_to([("7,b", "missing_key", "movie_id")]), label="Missing")
        assert_that(typed, equal_to([(1, ("m.csv", {"genres": ["G", "H"], "year": 1999}))]), label="Typed")
        assert_that(stats, equal_to([{"movies.rows": 1, "movies.looked_up": 1,
                                      "movies.missing_key": 1, "movies.join": join}]), label="Stats")


def test_join_table_on_arrow_batches(test_pipeline, tmp_path):
    spec = table_spec(tmp_path, missing_key="reject")
    batch = RawBatch("imp.csv", table=pa.table({"movie_id": ["1", "7", " 2", ""], "user": ["a", "b", "c", "d"]}),
                     lines=["1,a", "7,b", " 2,c", ",d"])
    with test_pipeline() as p:
        impressions = p | "Imp" >> beam.Create([batch])
        rows = p | "Rows" >> beam.Create([RawRecord("m.csv", "1", {"movie_id": "1", "genres": "G|H", "year": "1999"}),
                                          RawRecord("m.csv", "2", {"movie_id": "2", "genres": "K", "year": ""})])
        joined, missing, _, _, _ = (impressions, rows) | JoinTable(spec, spec.tables[0], "side_input", 16)
        assert_that(joined | beam.FlatMap(lambda b: list(zip(b.lines, b.table.column("genres").to_pylist(),
                                                              b.table.column("year").to_pylist()))),
                    equal_to([("1,a", ["G", "H"], 1999), (" 2,c", ["K"], 0), (",d", None, None)]), label="Joined")
        assert_that(missing | beam.Map(lambda r: r.row), equal_to(["7,b"]), label="Missing")


def test_auto_join_chooses_by_size(tmp_path):
    table = table_spec(tmp_path).tables[0]
    assert choose_join(table, SIDE_INPUT_MAX_BYTES) == "side_input"
    assert choose_join(table, SIDE_INPUT_MAX_BYTES + 1) == "grouped"
    assert choose_join(table_spec(tmp_path, join="grouped").tables[0], 10) == "grouped"


def test_table_inputs_are_checked(logs, tmp_path):
    spec = table_spec(logs)
    with pytest.raises(OptionError, match="--table names table.*films"):
        preprocess(spec, str(logs / "imp.csv"), str(tmp_path / "w"), table_patterns={"films": "x.csv"})
    with pytest.raises(Exception, match="no file matches .*nothing.*side table 'movies'"):
        preprocess(spec, str(logs / "imp.csv"), str(tmp_path / "w"), table_patterns={"movies": str(tmp_path / "nothing*.csv")})
    (tmp_path / "films.csv").write_text("id,genres\n1,A\n")
    with pytest.raises(Exception, match="movie_id"):
        preprocess(spec, str(logs / "imp.csv"), str(tmp_path / "w"), table_patterns={"movies": str(tmp_path / "films.csv")})
    no_input = table_spec(logs, input=None)
    with pytest.raises(OptionError, match="side table 'movies' has no input: pass --table movies=PATTERN"):
        preprocess(no_input, str(logs / "imp.csv"), str(tmp_path / "w"))


def _spec_data(tmp_path):
    return table_spec(tmp_path).to_dict()


@pytest.mark.parametrize("change,path,message", [
    (lambda d: d["tables"][0].update(key="nope"), "tables[0].key", "is not declared"),
    (lambda d: d["tables"][0].update(key="genres"), "tables[0].columns[0].name", "the table's key"),
    (lambda d: d["features"].append({"name": "score", "type": "float", "transform": "zscore"})
     or d["tables"][0].update(key="score"), "tables[0].key", "int or string"),
    (lambda d: d["tables"][0]["columns"][1].update(required=True), "tables[0].columns[1].default", "missing_key: default"),
    (lambda d: d["tables"][0]["columns"].append({"name": "title", "type": "string", "required": False, "default": ""}),
     "tables[0].columns[2].name", "is not a feature"),
    (lambda d: d["tables"][0]["columns"].append({"name": "movie_id", "type": "int"}), "tables[0].columns[2].name",
     "the table's key"),
    (lambda d: d["features"][2].update(type="string"), "features[2].type", "side table's column"),
    (lambda d: d["tables"][0].update(missing_key="skip"), "tables[0].missing_key", "unknown value"),
    (lambda d: d["tables"][0].update(join="broadcast"), "tables[0].join", "unknown value"),
    (lambda d: d["tables"].append(dict(d["tables"][0])), "tables[1].name", "duplicate table"),
    (lambda d: d["tables"][0].update(columns=[]), "tables[0].columns", "at least one column"),
    (lambda d: d["columns"].append({"name": "year", "type": "int"}), "columns[1].name", "duplicate name"),
])
def test_spec_errors_name_the_key_path(tmp_path, change, path, message):
    data = _spec_data(tmp_path)
    change(data)
    with pytest.raises(SpecError, match=message) as caught:
        spec_from_dict(data)
    assert caught.value.path == path


def test_tables_round_trip_and_lookups(tmp_path):
    spec = table_spec(tmp_path)
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec.table_of("genres") is spec.tables[0] and spec.table_of("user") is None
    assert spec.column("genres").list.separator == "|"
    feature_keys = {"name", "transform", "top_k", "min_count", "num_oov", "oov_dropout", "num_bins",
                    "num_buckets", "embedding_dim", "role"}
    assert all(set(f) == feature_keys for f in spec.to_dict()["features"] if f["name"] in ("genres", "year"))
