"""The pipeline on Beam's portable runner with workers in other processes, as Flink, Spark and
Dataflow run it: ``--runner=PortableRunner --job_endpoint=embed --environment_type=EXTERNAL``
against a worker pool (``apache_beam.runners.worker.worker_pool_main``) on loopback. The job goes
through the Fn API and the runner API protos; its outputs must equal the in-process run's. And the
default runner on two threads (parallel bundles in one process): the one-thread run's outputs, and
the same shard files on every run."""

import gzip
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from data_sets.clicklog import generate_clicklog
from feature_specs.artifacts import Workdir
from pipelines import preprocess
from pipelines.files import matching_files, read_text
from pipelines.tfrecord import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def worker_pool():
    """A worker pool process on a loopback port; its workers run this interpreter on this checkout."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if pool.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker pool did not start on port {port}") from None
                time.sleep(0.2)
        yield port
    finally:
        pool.terminate()
        pool.wait(timeout=30)


def _outputs(workdir: Workdir, spec_features) -> dict:
    report = json.loads(read_text(workdir.report_json))
    report.pop("seconds")
    statistics = json.loads(read_text(workdir.statistics_json))
    examples = {}
    for split in ("train", "eval"):
        records = []
        for path in matching_files(workdir.split_pattern(split)):
            with gzip.open(path, "rb") as handle:
                records += read_records(handle, path)
        examples[split] = sorted(records)
    rejected = sorted(line for path in matching_files(workdir.rejected_pattern)
                      for line in read_text(path).splitlines())
    vocabularies = {name: read_text(workdir.vocabulary_file(name)) for name in spec_features}
    return {"report": report, "statistics": statistics, "examples": examples, "rejected": rejected,
            "vocabularies": vocabularies}


def test_the_portable_runner_with_external_workers_writes_the_in_process_outputs(tmp_path, worker_pool,
                                                                                  clicklog_spec):
    generate_clicklog(str(tmp_path / "raw"), rows=3000, seed=0, chunk_rows=1000, corrupt_fraction=0.01)
    pattern = str(tmp_path / "raw" / "*.parquet")
    vocabulary = [f.name for f in clicklog_spec.features if f.transform == "vocabulary"]
    preprocess(clicklog_spec, pattern, str(tmp_path / "local"), max_reject_rate=1.0)
    preprocess(clicklog_spec, pattern, str(tmp_path / "portable"), max_reject_rate=1.0, beam_args=[
        "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{worker_pool}"])
    local = _outputs(Workdir(str(tmp_path / "local")), vocabulary)
    portable = _outputs(Workdir(str(tmp_path / "portable")), vocabulary)
    assert portable["report"]["reconciled"] and portable["report"]["input_rows"] == 3000
    assert portable["report"]["rejected"]["total"] > 0
    for key in ("report", "examples", "rejected", "vocabularies"):
        assert portable[key] == local[key], key
    for name, stats in local["statistics"]["numeric"].items():
        assert portable["statistics"]["numeric"][name] == pytest.approx(stats, rel=1e-9), name
    for name, boundaries in local["statistics"]["quantiles"].items():
        assert portable["statistics"]["quantiles"][name] == pytest.approx(boundaries, rel=1e-9), name


def _shards(workdir: Workdir) -> dict:
    """Each shard file's name -> its decompressed bytes (examples) or text (rejected rows)."""
    shards = {}
    for split in ("train", "eval"):
        for path in matching_files(workdir.split_pattern(split)):
            with gzip.open(path, "rb") as handle:
                shards[os.path.basename(path)] = handle.read()
    for path in matching_files(workdir.rejected_pattern):
        shards[os.path.basename(path)] = read_text(path)
    return shards


def test_threads_write_the_one_thread_outputs_and_the_same_shards_every_run(tmp_path, clicklog_spec):
    generate_clicklog(str(tmp_path / "raw"), rows=3000, seed=0, chunk_rows=500, corrupt_fraction=0.01)
    pattern = str(tmp_path / "raw" / "*.parquet")
    vocabulary = [f.name for f in clicklog_spec.features if f.transform == "vocabulary"]
    preprocess(clicklog_spec, pattern, str(tmp_path / "one"), max_reject_rate=1.0,
               beam_args=["--direct_running_mode=in_memory"])
    threads = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    for run in ("a", "b"):
        preprocess(clicklog_spec, pattern, str(tmp_path / run), max_reject_rate=1.0, beam_args=threads)
    one = _outputs(Workdir(str(tmp_path / "one")), vocabulary)
    threaded = _outputs(Workdir(str(tmp_path / "a")), vocabulary)
    for key in ("report", "examples", "rejected", "vocabularies"):
        assert threaded[key] == one[key], key
    first, second = _shards(Workdir(str(tmp_path / "a"))), _shards(Workdir(str(tmp_path / "b")))
    assert len([name for name in first if name.startswith("train")]) == 2, sorted(first)
    assert first == second
