"""The preprocessing pipeline: read -> validate -> split -> analyze the train split -> write.

Command line (any other flag is a Beam pipeline option, e.g. ``--runner``,
``--direct_num_workers 4 --direct_running_mode multi_processing``)::

    python -m pipelines --spec feature_specs/clicklog.yaml --input 'logs/*.csv' --workdir runs/1

Python::

    report = preprocess("feature_specs/clicklog.yaml", "logs/*.parquet", "runs/1")

Without ``--runner`` the pipeline runs in-process on the FnApiRunner, the DirectRunner's batch
engine. (The DirectRunner itself first tries to download and start the Prism runner, which needs
network access, and ignores ``direct_num_workers``.)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from feature_specs.artifacts import Workdir
from feature_specs.spec import FeatureSpec, load_spec
from pipelines.analyze import AnalyzeTrain
from pipelines.files import delete_matching, matching_files, read_text, write_text
from pipelines.options import PreprocessOptions, infer_input_format
from pipelines.read import ReadRecords, check_header, read_csv_header
from pipelines.report import (COUNTS_SUFFIX, CountRows, build_report, check_reconciled, counts_json,
                              format_table)
from pipelines.split import SplitRows
from pipelines.validate import ValidateRows
from pipelines.write import WriteExamples, WriteFiles, WriteRejected, vocabulary_text

DEFAULT_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"

logger = logging.getLogger(__name__)


def counts_path(workdir: Workdir) -> str:
    """Where the pipeline writes its counts document."""
    return workdir.counts_prefix + COUNTS_SUFFIX


def output_patterns(workdir: Workdir) -> list[str]:
    """Every file a run writes, as patterns (cleared first, so no stale shard survives a rerun)."""
    return [workdir.split_pattern("train"), workdir.split_pattern("eval"), workdir.rejected_pattern,
            counts_path(workdir), workdir.vocabulary_file("*"), workdir.statistics_json,
            workdir.spec_json, workdir.report_json]


def _vocabulary_file(item, workdir):
    """``(feature, values)`` -> ``(vocabulary file path, file text)``."""
    name, values = item
    return workdir.vocabulary_file(name), vocabulary_text(values)


def build_pipeline(pipeline: beam.Pipeline, spec: FeatureSpec, input_pattern: str, input_format: str,
                   workdir: Workdir) -> None:
    """Adds every step of the preprocessing to ``pipeline``.

    Args:
        pipeline: beam.Pipeline. The pipeline to add steps to.
        spec: FeatureSpec. Columns, checks, transforms and split.
        input_pattern: str. Raw input file pattern.
        input_format: str. ``csv`` or ``parquet``.
        workdir: Workdir. Output layout.
    """
    records = pipeline | "Read" >> ReadRecords(input_pattern, input_format)
    validated = records | "Validate" >> ValidateRows(spec)
    train, eval_ = validated.valid | "Split" >> SplitRows(spec.split)
    vocabularies, statistics = train | "Analyze" >> AnalyzeTrain(spec)

    train | "WriteTrain" >> WriteExamples(workdir.split_prefix("train"), spec.all_columns)
    eval_ | "WriteEval" >> WriteExamples(workdir.split_prefix("eval"), spec.all_columns)
    validated.rejected | "WriteRejected" >> WriteRejected(workdir.rejected_prefix)
    counts = ({"input": records, "rejected": validated.rejected, "train": train, "eval": eval_}
              | "Count" >> CountRows())

    files = (
        vocabularies | "VocabularyFiles" >> beam.Map(_vocabulary_file, workdir),
        statistics | "StatisticsFile" >> beam.Map(lambda stats, path: (path, stats.to_json()),
                                                  workdir.statistics_json),
        counts | "CountsFile" >> beam.Map(lambda c, path: (path, counts_json(c)), counts_path(workdir)),
        pipeline | "SpecFile" >> beam.Create([(workdir.spec_json, spec.to_json())]),
    )
    files | "Artifacts" >> beam.Flatten() | "WriteArtifacts" >> WriteFiles()


def _log_counters(result) -> None:
    """Logs the pipeline's own counters (valid rows, rejects per reason, skipped blank lines)."""
    try:
        counters = result.metrics().query(MetricsFilter())["counters"]
    except NotImplementedError:  # runners without metrics support
        return
    for counter in sorted(counters, key=lambda c: (c.key.metric.namespace, c.key.metric.name)):
        if counter.key.metric.namespace.startswith("pipelines.") and counter.committed:
            logger.info("preprocess: counter %s/%s = %d", counter.key.metric.namespace,
                        counter.key.metric.name, counter.committed)


def pipeline_options(beam_args: Sequence[str] = ()) -> PipelineOptions:
    """Beam options from command-line flags; the in-process FnApiRunner when no runner is named."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    return options


def preprocess(spec: FeatureSpec | str, input_pattern: str, workdir: Workdir | str,
               input_format: str | None = None, beam_args: Sequence[str] = ()) -> dict:
    """Runs the preprocessing pipeline and writes ``report.json``.

    Args:
        spec: FeatureSpec, or str path of a spec YAML/JSON file.
        input_pattern: str. Raw input file pattern (local or any Beam filesystem URI).
        workdir: Workdir or str. Output root; earlier outputs of this pipeline there are replaced.
        input_format: str. ``csv`` or ``parquet``; inferred from the pattern's extension if None.
        beam_args: standard Beam pipeline flags, e.g. ``["--direct_num_workers=4",
            "--direct_running_mode=multi_processing"]`` or ``["--runner=DataflowRunner", ...]``.

    Returns:
        The report dict (see :func:`pipelines.report.build_report`).

    Raises:
        FileNotFoundError: no file matches ``input_pattern``.
        ValueError: unknown input format, or a CSV header without the spec's required columns.
        pipelines.report.ReconciliationError: input rows != written + rejected (report.json is
            still written, with ``"reconciled": false``).
    """
    start = time.monotonic()
    spec = load_spec(spec) if isinstance(spec, str) else spec
    workdir = Workdir(workdir) if isinstance(workdir, str) else workdir
    input_format = input_format or infer_input_format(input_pattern)
    files = matching_files(input_pattern)
    if not files:
        raise FileNotFoundError(f"no input file matches {input_pattern!r}")
    logger.info("preprocess: spec %r, %d %s file(s) matching %s -> %s",
                spec.name, len(files), input_format, input_pattern, workdir.root)
    if input_format == "csv":
        required = [c.name for c in spec.all_columns if c.required]
        check_header(read_csv_header(files[0]), required, files[0])

    stale = delete_matching(output_patterns(workdir))
    if stale:
        logger.info("preprocess: removed %d output file(s) of an earlier run", len(stale))

    options = pipeline_options(beam_args)
    logger.info("preprocess: pipeline starting on %s", options.view_as(StandardOptions).runner)
    pipeline_start = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, spec, input_pattern, input_format, workdir)
    logger.info("preprocess: pipeline finished in %.1f s", time.monotonic() - pipeline_start)
    _log_counters(pipeline.result)

    counts = json.loads(read_text(counts_path(workdir)))
    report = build_report(counts, spec.name, input_pattern, time.monotonic() - start)
    write_text(workdir.report_json, json.dumps(report, indent=2) + "\n")
    logger.info("preprocess: wrote %s", workdir.report_json)
    print(format_table(report))
    check_reconciled(report)
    return report


def run(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point: parses app flags and Beam flags, runs, returns the report.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).
    """
    parser = argparse.ArgumentParser(
        description="Clean, validate, split and analyze a raw log into TFRecords and artifacts.")
    PreprocessOptions._add_argparse_args(parser)
    args, beam_args = parser.parse_known_args(argv)
    missing = [f"--{name}" for name in ("spec", "input", "workdir") if not getattr(args, name)]
    if missing:
        parser.error(f"missing required argument(s): {', '.join(missing)}")
    return preprocess(args.spec, args.input, args.workdir, args.input_format, beam_args)
