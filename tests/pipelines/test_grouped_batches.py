"""The key-grouped join on the batched path (pipelines/side_tables.py): batches stay whole, only
their distinct keys are grouped with the table, and each batch is joined against the rows of its
own keys: Arrow batches stay Arrow, record batches (JSONL) are joined row by row, and the output
is the side-input join's."""

import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.util import assert_that, equal_to

from feature_specs.artifacts import Workdir
from pipelines import preprocess
from pipelines.batches import RawBatch
from pipelines.records import RawRecord
from pipelines.side_tables import JoinTable
from test_side_tables import IMPRESSIONS, MISSING, MOVIES, rejected, table_spec, written


def test_grouped_join_keeps_arrow_batches_and_joins_record_batches(test_pipeline, tmp_path):
    spec = table_spec(tmp_path, missing_key="reject")
    arrow = RawBatch("imp.csv", table=pa.table({"movie_id": ["1", "7", " 2", ""], "user": ["a", "b", "c", "d"]}),
                     lines=["1,a", "7,b", " 2,c", ",d"])
    records = RawBatch("imp.jsonl", records=[RawRecord("imp.jsonl", '{"movie_id": 2}', {"movie_id": 2, "user": "e"}),
                                             RawRecord("imp.jsonl", '{"movie_id": 9}', {"movie_id": 9, "user": "f"})])
    with test_pipeline() as p:
        impressions = p | "Imp" >> beam.Create([arrow, records])
        rows = p | "Rows" >> beam.Create([RawRecord("m.csv", "1", {"movie_id": "1", "genres": "G|H", "year": "1999"}),
                                          RawRecord("m.csv", "2", {"movie_id": "2", "genres": "K", "year": ""}),
                                          RawRecord("m.csv", "5", {"movie_id": "5", "genres": "Z", "year": "1"})])
        joined, missing, _, _, stats = (impressions, rows) | JoinTable(spec, spec.tables[0], "grouped", 16)

        def rows_of(batch):
            if batch.table is not None:
                return [("arrow", line, genres, year) for line, genres, year in zip(
                    batch.lines, batch.table.column("genres").to_pylist(), batch.table.column("year").to_pylist())]
            return [("records", r.row, r.values.get("genres"), r.values.get("year")) for r in batch.records]

        assert_that(joined | beam.FlatMap(rows_of),
                    equal_to([("arrow", "1,a", ["G", "H"], 1999), ("arrow", " 2,c", ["K"], 0), ("arrow", ",d", None, None),
                              ("records", '{"movie_id": 2}', ["K"], 0)]), label="Joined")
        assert_that(missing | beam.Map(lambda r: (r.row, r.reason)),
                    equal_to([("7,b", "missing_key"), ('{"movie_id": 9}', "missing_key")]), label="Missing")
        assert_that(stats, equal_to([{"movies.rows": 3, "movies.looked_up": 3, "movies.missing_key": 2,
                                      "movies.join": "grouped"}]), label="Stats")


def test_grouped_and_side_input_write_the_same_rows_from_jsonl(tmp_path):
    (tmp_path / "movies.csv").write_text("\n".join(MOVIES) + "\n")
    header = IMPRESSIONS[0].split(",")
    with open(tmp_path / "imp.jsonl", "w") as handle:
        for line in IMPRESSIONS[1:]:
            values = dict(zip(header, line.split(",")))
            handle.write(json.dumps({k: v for k, v in values.items() if v != ""}) + "\n")
    outputs, reports = [], []
    for join in ("side_input", "grouped"):
        workdir = Workdir(str(tmp_path / f"work_{join}"))
        reports.append(preprocess(table_spec(tmp_path, "reject", join), str(tmp_path / "imp.jsonl"), workdir.root,
                                  beam_args=["--batch_rows=16"]))
        outputs.append((written(workdir), rejected(workdir)))
    assert outputs[0][0] and outputs[0] == outputs[1]
    assert [r["tables"]["movies"]["missing_key"] for r in reports] == [MISSING, MISSING]
    assert all(r["reconciled"] for r in reports)
