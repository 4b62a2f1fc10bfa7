"""The preprocessing pipeline: read -> validate -> split -> analyze the train split -> write.

Command line (any other flag is a Beam pipeline option, e.g. ``--runner``,
``--direct_num_workers 4 --direct_running_mode multi_processing``)::

    python -m pipelines --spec feature_specs/clicklog.yaml --input 'logs/*.csv' --workdir runs/1

Python::

    report = preprocess("feature_specs/clicklog.yaml", "logs/*.parquet", "runs/1")
    # a daily run that must match the served model: the artifacts of runs/1, not new ones
    report = preprocess("feature_specs/clicklog.yaml", "logs/day2/*.parquet", "runs/2",
                        reuse_artifacts="runs/1")

Before the pipeline starts, every input file's CSV header or Parquet footer is checked
(:mod:`pipelines.input_checks`): an empty, truncated or malformed file, or one without a column
the spec needs, fails at once with an :class:`~feature_specs.input_formats.InputFileError` naming it.

``report.json`` is written last and says whether the data may be trained on: ``"status"`` is
``complete``, or ``failed`` with a one-line ``"failure"`` when the run wrote its outputs but fails a
check, after which the run raises: :class:`~pipelines.report.RejectRateError` when more rows are
rejected than ``max_reject_rate`` allows (the spec's ``pipeline.max_reject_rate``, default 5%, or
``--max_reject_rate``), :class:`~pipelines.report.EmptyTrainSplitError` when no row reached the
train split, :class:`~pipelines.report.ReconciliationError` when rows were lost.

Without ``--runner`` the pipeline runs in-process on the FnApiRunner, the DirectRunner's batch
engine: on one thread, or on :data:`DEFAULT_LOCAL_THREADS` threads when the input is large
(:func:`choose_local_threads`), unless a ``--direct_*`` flag says otherwise
(``--direct_num_workers N --direct_running_mode multi_processing`` for N worker processes).
(The DirectRunner itself first tries to download and start the Prism runner, which needs
network access, and ignores ``direct_num_workers``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from typing import Mapping, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from feature_specs.artifacts import Statistics, Workdir
from feature_specs.spec import FeatureSpec
from feature_specs.spec_reader import load_spec, spec_from_dict
from pipelines.analyze import AnalyzeTrain
from pipelines.analyze_batches import AnalyzeTrainBatches
from pipelines.batches import RawBatch
from pipelines.files import delete_matching, file_sizes, matching_files, read_text, write_text
from pipelines.history import AddHistories
from pipelines.input_checks import check_input_files
from pipelines.join import JoinLabels
from pipelines.options import (BATCH_ROWS, MissingInputError, OptionError, PreprocessOptions, infer_input_format,
                               parse_event_inputs, parse_table_inputs)
from pipelines.quality import MergeProfiles
from pipelines.read import ReadRecords
from pipelines.read_batches import ReadBatches
from pipelines.report import COUNTS_SUFFIX, CountRows, build_report, counts_json, finish_report, format_table
from pipelines.side_tables import JoinTables, table_inputs
from pipelines.split import SplitBatches, SplitRows
from pipelines.validate import ValidateRows, reference_checks
from pipelines.validate_batches import ValidateBatches
from pipelines.write import WriteExampleBatches, WriteExamples, WriteFiles, WriteRejected, vocabulary_text

DEFAULT_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
# The default runner's local mode when no --direct_* flag is given: one thread for small inputs,
# DEFAULT_LOCAL_THREADS threads in this process from THREADS_MIN_INPUT_BYTES of input over at least
# as many files (benchmarks/preprocess.py, 2 cores, Parquet: threads cost ~0.5 s per run, 0.75x one
# thread at 100k rows (1 MB), even at 500k (5 MB), 1.07x at 1M (10 MB), 1.31x at 3.5M (35 MB),
# 1.33x at 10M (96 MB)).
DEFAULT_LOCAL_THREADS = 2
THREADS_MIN_INPUT_BYTES = 32 * 2**20
_DIRECT_FLAGS = ("--direct_running_mode", "--direct_num_workers")

logger = logging.getLogger(__name__)


def counts_path(workdir: Workdir) -> str:
    """Where the pipeline writes its counts document."""
    return workdir.counts_prefix + COUNTS_SUFFIX


def output_patterns(workdir: Workdir) -> list[str]:
    """Every file a run writes, as patterns (cleared first, so no stale shard survives a rerun)."""
    return [workdir.split_pattern("train"), workdir.split_pattern("eval"), workdir.rejected_pattern,
            workdir.orphan_events_pattern, workdir.table_snapshot("*"), workdir.table_rejected_prefix("*") + "-*.jsonl",
            counts_path(workdir), workdir.vocabulary_file("*"), workdir.statistics_json,
            workdir.spec_json, workdir.report_json]


def _vocabulary_file(item, workdir):
    """``(feature, values)`` -> ``(vocabulary file path, file text)``."""
    name, values = item
    return workdir.vocabulary_file(name), vocabulary_text(values)


@dataclasses.dataclass(frozen=True)
class ReusedArtifacts:
    """The artifacts of an earlier run, read whole (they are small) before this run writes.

    Args:
        statistics_json: str. The text of its ``statistics.json``, copied unchanged.
        vocabularies: feature -> the text of its vocabulary file, copied unchanged.
    """

    statistics_json: str
    vocabularies: Mapping[str, str]

    def vocabulary_values(self) -> dict[str, list[str]]:
        return {name: text.split("\n")[:-1] if text else [] for name, text in self.vocabularies.items()}

    def statistics(self) -> Statistics:
        return Statistics.from_json(self.statistics_json)


def _analyzed(spec: FeatureSpec) -> list[dict]:
    return [dataclasses.asdict(f) for f in spec.features]


def load_reused_artifacts(path: str, spec: FeatureSpec) -> ReusedArtifacts:
    """Reads an earlier run's artifacts and checks they were made for the same features.

    Args:
        path: str. The earlier run's workdir, or its ``artifacts/`` directory.
        spec: FeatureSpec. This run's spec.

    Raises:
        MissingInputError: an artifact file is missing.
        OptionError: the earlier run's spec declares different features or transforms.
    """
    root = path.rstrip("/")
    earlier = Workdir(root[: -len("/artifacts")] if root.endswith("/artifacts") else root)
    for needed in (earlier.spec_json, earlier.statistics_json):
        if not matching_files(needed):
            raise MissingInputError(f"--reuse_artifacts {path!r}: {needed} is missing")
    earlier_spec = spec_from_dict(json.loads(read_text(earlier.spec_json)), source=earlier.spec_json)
    if _analyzed(earlier_spec) != _analyzed(spec):
        changed = sorted({f["name"] for f in _analyzed(earlier_spec)} ^ {f["name"] for f in _analyzed(spec)}
                         | {a["name"] for a, b in zip(_analyzed(earlier_spec), _analyzed(spec)) if a != b})
        raise OptionError(
            f"--reuse_artifacts {path!r}: its spec's features differ from this spec's "
            f"({', '.join(changed) or 'order'}); artifacts can only be reused for the same features")
    vocabularies = {}
    for feature in spec.features:
        if feature.transform == "vocabulary":
            vocabularies[feature.name] = read_text(earlier.vocabulary_file(feature.name))
    return ReusedArtifacts(read_text(earlier.statistics_json), vocabularies)


def build_pipeline(pipeline: beam.Pipeline, spec: FeatureSpec, input_pattern: str, input_format: str,
                   workdir: Workdir, reused: ReusedArtifacts | None = None,
                   event_inputs: Mapping[str, tuple[str, str]] | None = None,
                   batch_rows: int = BATCH_ROWS,
                   tables: Mapping[str, tuple[str, str, str]] | None = None) -> None:
    """Adds every step of the preprocessing to ``pipeline``.

    Args:
        pipeline: beam.Pipeline. The pipeline to add steps to.
        spec: FeatureSpec. Columns, checks, transforms and split.
        input_pattern: str. Raw input file pattern.
        input_format: str. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord``.
        workdir: Workdir. Output layout.
        reused: the artifacts of an earlier run to write instead of analyzing the train split
            (reuse mode); values outside them are counted per feature. None: analyze.
        event_inputs: source name -> ``(pattern, format)`` of each event source of
            ``spec.sources`` (label join); None when the spec has no ``sources:``.
        batch_rows: int. Rows per Arrow batch (the batched path); 0: one element per row (the
            row-at-a-time path, same outputs).
        tables: table name -> ``(pattern, format, join)`` of each side table of ``spec.tables``
            (:func:`pipelines.side_tables.table_inputs`); None when the spec has no ``tables:``.
    """
    reference = (reference_checks(spec, reused.vocabulary_values(), reused.statistics())
                 if reused is not None else None)
    steps = _BatchSteps(spec, batch_rows) if batch_rows else _RowSteps(spec)
    records = pipeline | "Read" >> steps.read(input_pattern, input_format)
    extra_counts = {}
    to_validate = records
    if spec.sources is not None:
        events = {name: pipeline | f"ReadEvents[{name}]" >> steps.read(pattern, fmt)
                  for name, (pattern, fmt) in event_inputs.items()}
        rows = {name: steps.rows(pcoll, name) for name, pcoll in {"impressions": records, **events}.items()}
        joined, orphans, join_stats = rows | "JoinLabels" >> JoinLabels(spec.sources)
        to_validate = steps.regroup(joined)
        orphans | "WriteOrphans" >> beam.io.WriteToText(workdir.orphan_events_prefix, file_name_suffix=".jsonl")
        extra_counts["join"] = join_stats
    table_rejected = ()
    if spec.tables:
        table_records = {name: steps.rows(pipeline | f"ReadTable[{name}]" >> steps.read(pattern, fmt), f"table_{name}")
                         for name, (pattern, fmt, _) in tables.items()}
        to_validate, missing_keys, extra_counts["tables"] = (
            (to_validate, table_records)
            | "JoinTables" >> JoinTables(spec, {name: how for name, (_, _, how) in tables.items()}, batch_rows,
                                         workdir.table_snapshot, workdir.table_rejected_prefix))
        table_rejected = (missing_keys,)
    validated = to_validate | "Validate" >> steps.validate(reference)
    rejected = (validated.rejected, *table_rejected) | "AllRejected" >> beam.Flatten()
    valid = validated.valid
    if spec.history_features:  # derived from the valid rows, before the split
        valid = valid | "Histories" >> AddHistories(spec.history_features, spec.all_columns, batched=bool(batch_rows))
    train, eval_ = valid | "Split" >> steps.split()
    names = [c.name for c in spec.logged_columns]
    quality = (validated.profile
               | "MergeProfiles" >> beam.CombineGlobally(MergeProfiles())
               | "Summary" >> beam.Map(lambda profile, names: profile.summary(names), names))

    train | "WriteTrain" >> steps.write(workdir.split_prefix("train"))
    eval_ | "WriteEval" >> steps.write(workdir.split_prefix("eval"))
    rejected | "WriteRejected" >> WriteRejected(workdir.rejected_prefix)
    counts = ({"input": steps.sizes(records, "Input"), "rejected": rejected,
               "train": steps.sizes(train, "Train"), "eval": steps.sizes(eval_, "Eval"),
               "quality": quality, **extra_counts}
              | "Count" >> CountRows(row_counts=bool(batch_rows)))

    if reused is None:
        vocabularies, statistics = train | "Analyze" >> steps.analyze()
        analysis = (
            vocabularies | "VocabularyFiles" >> beam.Map(_vocabulary_file, workdir),
            statistics | "StatisticsFile" >> beam.Map(lambda stats, path: (path, stats.to_json()),
                                                      workdir.statistics_json),
        )
    else:
        copies = [(workdir.vocabulary_file(name), text) for name, text in sorted(reused.vocabularies.items())]
        copies.append((workdir.statistics_json, reused.statistics_json))
        analysis = (pipeline | "ReusedArtifacts" >> beam.Create(copies),)
    files = analysis + (
        counts | "CountsFile" >> beam.Map(lambda c, path: (path, counts_json(c)), counts_path(workdir)),
        pipeline | "SpecFile" >> beam.Create([(workdir.spec_json, spec.to_json())]),
    )
    files | "Artifacts" >> beam.Flatten() | "WriteArtifacts" >> WriteFiles()


class _RowSteps:
    """The row-at-a-time path's transforms: one element per row (RawRecord, then dict)."""

    def __init__(self, spec: FeatureSpec):
        self._spec = spec

    def read(self, pattern, input_format):
        return ReadRecords(pattern, input_format)

    def rows(self, pcoll, name):
        return pcoll

    def regroup(self, records):
        return records

    def validate(self, reference):
        return ValidateRows(self._spec, reference)

    def split(self):
        return SplitRows(self._spec.split)

    def write(self, prefix):
        return WriteExamples(prefix, self._spec.all_columns)

    def analyze(self):
        return AnalyzeTrain(self._spec)

    def sizes(self, pcoll, label):
        return pcoll


class _BatchSteps(_RowSteps):
    """The batched path's transforms: RawBatch elements, then pa.Table of valid rows."""

    def __init__(self, spec: FeatureSpec, batch_rows: int):
        super().__init__(spec)
        self._batch_rows = batch_rows

    def read(self, pattern, input_format):
        return ReadBatches(pattern, input_format, self._batch_rows)

    def rows(self, pcoll, name):
        return pcoll | f"Rows[{name}]" >> beam.FlatMap(RawBatch.iter_records)

    def regroup(self, records):
        return (records | "Regroup" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_rows)
                | "ToBatches" >> beam.Map(RawBatch.from_records))

    def validate(self, reference):
        return ValidateBatches(self._spec, reference)

    def split(self):
        return SplitBatches(self._spec.split)

    def write(self, prefix):
        return WriteExampleBatches(prefix, self._spec.all_columns)

    def analyze(self):
        return AnalyzeTrainBatches(self._spec)

    def sizes(self, pcoll, label):
        return pcoll | f"Rows[{label}]" >> beam.Map(lambda batch: batch.num_rows)


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


def choose_local_threads(options: PipelineOptions, beam_args: Sequence[str], sizes: Sequence[int]) -> int:
    """Runs the default runner on :data:`DEFAULT_LOCAL_THREADS` threads when the input is large
    enough to gain (:data:`THREADS_MIN_INPUT_BYTES` over at least as many files as threads: one
    file is read by one thread); leaves the options alone under another runner or when a
    ``--direct_*`` flag chose the mode. Returns the number of threads set (0: left alone).

    Args:
        options: the run's options, changed in place.
        beam_args: the flags they were parsed from.
        sizes: the input files' sizes in bytes.
    """
    if options.view_as(StandardOptions).runner != DEFAULT_RUNNER:
        return 0
    if any(arg.split("=")[0] in _DIRECT_FLAGS for arg in beam_args):
        return 0
    if len(sizes) < DEFAULT_LOCAL_THREADS or sum(sizes) < THREADS_MIN_INPUT_BYTES:
        return 0
    direct = options.view_as(DirectOptions)
    direct.direct_running_mode = "multi_threading"
    direct.direct_num_workers = DEFAULT_LOCAL_THREADS
    return DEFAULT_LOCAL_THREADS


def _event_inputs(spec: FeatureSpec, patterns: Mapping[str, str]) -> dict[str, tuple[str, str]] | None:
    """Checks that every event source of the spec has an input, and nothing else does, and that
    each input's files are readable and hold the impression id, the time and the summed field.

    Raises:
        OptionError: ``--events`` names an unknown source or misses one.
        MissingInputError: no file matches a source's pattern.
        InputFileError: a file of a source is malformed or lacks a column the join needs.
    """
    names = [e.name for e in spec.sources.events] if spec.sources else []
    unknown = sorted(set(patterns) - set(names))
    if unknown:
        raise OptionError(f"--events names source(s) {', '.join(unknown)} that the spec's sources: section "
                          f"does not declare ({', '.join(names) or 'none'})")
    if spec.sources is None:
        return None
    missing = [name for name in names if name not in patterns]
    if missing:
        raise OptionError(f"the spec joins labels from event source(s) {', '.join(missing)}: "
                          f"pass --events {missing[0]}=PATTERN")
    inputs = {}
    for source in spec.sources.events:
        pattern = patterns[source.name]
        files = matching_files(pattern)
        if not files:
            raise MissingInputError(f"no file matches {pattern!r} (event source {source.name!r})")
        inputs[source.name] = (pattern, infer_input_format(pattern))
        needed = [spec.sources.impression_id, source.timestamp] + ([source.value] if source.value else [])
        check_input_files(files, inputs[source.name][1], needed)
    return inputs


def preprocess(spec: FeatureSpec | str, input_pattern: str, workdir: Workdir | str,
               input_format: str | None = None, beam_args: Sequence[str] = (),
               max_reject_rate: float | None = None, reuse_artifacts: str | None = None,
               event_inputs: Mapping[str, str] | None = None,
               table_patterns: Mapping[str, str] | None = None) -> dict:
    """Runs the preprocessing pipeline and writes ``report.json``.

    Args:
        spec: FeatureSpec, or str path of a spec YAML/JSON file.
        input_pattern: str. Raw input file pattern (local or any Beam filesystem URI).
        workdir: Workdir or str. Output root; earlier outputs of this pipeline there are replaced.
        input_format: str. ``csv``, ``parquet``, ``jsonl`` or ``tfrecord``; inferred from the
            pattern's extension if None.
        beam_args: standard Beam pipeline flags, e.g. ``["--direct_num_workers=4",
            "--direct_running_mode=multi_processing"]`` or ``["--runner=DataflowRunner", ...]``.
            ``--max_reject_rate`` and ``--reuse_artifacts`` are read from them too (so
            ``mmoe preprocess`` passes them through), unless given as arguments.
        max_reject_rate: float. Fail above this reject rate; defaults to the spec's
            ``pipeline.max_reject_rate``.
        reuse_artifacts: str. An earlier run's workdir (or artifacts dir) whose vocabularies and
            statistics this run writes instead of analyzing its own train split.
        event_inputs: event source name -> file pattern, one per source of the spec's
            ``sources:`` section (label join); ``--events NAME=PATTERN`` among ``beam_args``.
        table_patterns: side table name -> file pattern, overriding the table's ``input:``;
            ``--table NAME=PATTERN`` among ``beam_args``.

    Returns:
        The report dict (see :func:`pipelines.report.build_report`).

    Raises:
        pipelines.options.MissingInputError: no file matches ``input_pattern`` (or an event
            pattern), or reused artifacts are missing.
        pipelines.options.OptionError: unknown input format, ``max_reject_rate`` outside [0, 1],
            ``--events`` that do not match the spec, reused artifacts made for other features.
        feature_specs.input_formats.InputFileError: an input file is empty, truncated or
            malformed, or lacks a column the spec requires (checked before the pipeline starts).
        pipelines.report.ReconciliationError: input rows != written + rejected.
        pipelines.report.RejectRateError: the reject rate is above ``max_reject_rate``.
        pipelines.report.EmptyTrainSplitError: no row was written to the train split.
        (For the last three report.json is still written, with ``"status": "failed"`` and the
        ``"failure"``.)
    """
    start = time.monotonic()
    spec = load_spec(spec) if isinstance(spec, str) else spec
    workdir = Workdir(workdir) if isinstance(workdir, str) else workdir
    options = pipeline_options(beam_args)
    flags = options.view_as(PreprocessOptions)
    if max_reject_rate is None:
        max_reject_rate = flags.max_reject_rate
    if max_reject_rate is None:
        max_reject_rate = spec.pipeline.max_reject_rate
    if not 0.0 <= max_reject_rate <= 1.0:
        raise OptionError(f"--max_reject_rate must be in [0, 1], got {max_reject_rate}")
    if flags.batch_rows < 0:
        raise OptionError(f"--batch_rows must be 0 (the row-at-a-time path) or more, got {flags.batch_rows}")
    reuse_artifacts = reuse_artifacts or flags.reuse_artifacts
    input_format = input_format or infer_input_format(input_pattern)
    sizes = file_sizes(input_pattern)
    files = sorted(sizes)
    if not files:
        raise MissingInputError(f"no input file matches {input_pattern!r}")
    logger.info("preprocess: spec %r, %d %s file(s) matching %s (%s MB) -> %s", spec.name, len(files),
                input_format, input_pattern, f"{sum(sizes.values()) / 2**20:,.1f}", workdir.root)
    if choose_local_threads(options, beam_args, list(sizes.values())):
        logger.info("preprocess: %d threads in this process (the input is large; --direct_running_mode=in_memory "
                    "for one)", DEFAULT_LOCAL_THREADS)
    derived = ({e.label for e in spec.sources.events} if spec.sources else set()) | spec.table_column_names
    check_input_files(files, input_format,
                      [c.name for c in spec.logged_columns if c.required and c.name not in derived])
    events = _event_inputs(spec, event_inputs if event_inputs is not None else parse_event_inputs(flags.events))
    tables = table_inputs(spec, table_patterns if table_patterns is not None else parse_table_inputs(flags.table))
    reused = load_reused_artifacts(reuse_artifacts, spec) if reuse_artifacts else None
    if reused is not None:
        logger.info("preprocess: reusing the artifacts of %s", reuse_artifacts)

    stale = delete_matching(output_patterns(workdir))
    if stale:
        logger.info("preprocess: removed %d output file(s) of an earlier run", len(stale))

    logger.info("preprocess: pipeline starting on %s", options.view_as(StandardOptions).runner)
    pipeline_start = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, spec, input_pattern, input_format, workdir, reused, events, flags.batch_rows, tables)
    logger.info("preprocess: pipeline finished in %.1f s", time.monotonic() - pipeline_start)
    _log_counters(pipeline.result)

    counts = json.loads(read_text(counts_path(workdir)))
    report = build_report(counts, spec.name, input_pattern, time.monotonic() - start,
                          max_reject_rate=max_reject_rate, mode="reuse" if reused else "analyze")
    failure = finish_report(report)
    write_text(workdir.report_json, json.dumps(report, indent=2) + "\n")
    logger.info("preprocess: wrote %s (status %s)", workdir.report_json, report["status"])
    print(format_table(report))
    if failure is not None:
        raise failure
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
    return preprocess(args.spec, args.input, args.workdir, args.input_format, beam_args,
                      max_reject_rate=args.max_reject_rate, reuse_artifacts=args.reuse_artifacts,
                      event_inputs=parse_event_inputs(args.events), table_patterns=parse_table_inputs(args.table))
