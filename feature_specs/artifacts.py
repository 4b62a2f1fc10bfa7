"""The workdir layout: where each stage writes and the next one reads.

Every stage reads the artifacts of the one before it through this module only, so no stage
reaches into another's internals. Paths are plain strings joined with ``/`` so that they work for
local directories and for any Beam/TensorFlow filesystem URI (``gs://``, ``s3://``, ...). File
access itself is left to the caller (Beam ``FileSystems`` in pipelines, ``tf.io.gfile`` in the
model and server): this module imports neither Beam nor Keras.

Layout of ``<workdir>``::

    raw/impressions-*.parquet          generated raw log (mmoe generate)
    data/train-*.tfrecord.gz           cleaned raw features + labels as tf.Example (GZIP)
    data/eval-*.tfrecord.gz
    artifacts/spec.json                the normalized spec the data was made with
    artifacts/statistics.json          numeric statistics and quantile boundaries (train split)
    artifacts/vocabularies/<f>.txt     one value per line, most frequent first (train split)
    artifacts/tables/<table>.jsonl     a side table's typed rows, the snapshot export puts in the SavedModel
    rejected/rejected-*.jsonl          {"source", "row", "reason", "field"} per rejected row
    rejected/orphan_events-*.jsonl     label join: events without an impression, or that do not parse
    rejected/table_<table>-*.jsonl     side table rows that fail a check (not impressions)
    report.json                        row counts per stage and reject reason
    model/model.keras                  the training model (mmoe train)
    model/serving.weights.h5           the serving model's weights, read by export
    model/best.weights.h5              the best epoch's weights, kept while training
    model/spec.json                    the spec trained with
    model/history.json                 per-epoch metrics
    model/gate_usage.json              gate statistics per epoch (gated architectures)
    model/checkpoints/                 a running job's checkpoints and history (removed when done)
    model/logs/                        TensorBoard logs
    model/plots/<plot>.png             learning curves, gate heatmap, gate usage
    model/report.html                  the run report
    model/workers/worker-<id>/         another worker's private model/ (multi-worker training)
    model/baselines/<architecture>/    a baseline's model/ (mmoe train --baselines)
    metrics.json                       eval metrics per task
    export/<spec name>/<version>/      SavedModel (TF Serving layout)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Mapping

from feature_specs.errors import UserError

STATISTICS_FORMAT_VERSION = 1
PREPROCESS_COMPLETE = "complete"  # report.json's "status" after a preprocess that passed every check
PREPROCESS_FAILED = "failed"  # ... after one that wrote its outputs but failed a check ("failure" says which)


def join(root: str, *parts: str) -> str:
    """Joins path parts with '/', keeping URI schemes (``gs://bucket``) intact."""
    path = root.rstrip("/") if root not in ("/", "") else root
    for part in parts:
        path = f"{path}/{part.strip('/')}" if path else part
    return path


@dataclass(frozen=True)
class Workdir:
    """Paths of one run's files under ``root`` (a local directory or a filesystem URI).

    Args:
        root: str. The run directory.
        model_root: str or None. Where training writes (``model/`` by default); baselines
            trained beside the main model use their own, reading the same data and artifacts.
    """

    root: str
    model_root: str | None = None

    @property
    def raw_dir(self) -> str:
        return join(self.root, "raw")

    @property
    def data_dir(self) -> str:
        return join(self.root, "data")

    def split_prefix(self, split: str) -> str:
        """Shard prefix of a split (``train``/``eval``); shards end in ``.tfrecord.gz``."""
        return join(self.data_dir, split)

    def split_pattern(self, split: str) -> str:
        return self.split_prefix(split) + "-*.tfrecord.gz"

    @property
    def artifacts_dir(self) -> str:
        return join(self.root, "artifacts")

    @property
    def spec_json(self) -> str:
        return join(self.artifacts_dir, "spec.json")

    @property
    def statistics_json(self) -> str:
        return join(self.artifacts_dir, "statistics.json")

    def vocabulary_file(self, feature: str) -> str:
        return join(self.artifacts_dir, "vocabularies", f"{feature}.txt")

    def table_snapshot(self, table: str) -> str:
        """A side table's typed rows, one JSON object per line (``pipelines.side_tables``)."""
        return join(self.artifacts_dir, "tables", f"{table}.jsonl")

    def table_rejected_prefix(self, table: str) -> str:
        """Shard prefix of a side table's rows that failed a check; shards end in ``.jsonl``."""
        return join(self.root, "rejected", f"table_{table}")

    @property
    def rejected_prefix(self) -> str:
        return join(self.root, "rejected", "rejected")

    @property
    def rejected_pattern(self) -> str:
        return self.rejected_prefix + "-*.jsonl"

    @property
    def orphan_events_prefix(self) -> str:
        """Events of a label join that match no impression (or do not parse), as JSON lines."""
        return join(self.root, "rejected", "orphan_events")

    @property
    def orphan_events_pattern(self) -> str:
        return self.orphan_events_prefix + "-*.jsonl"

    @property
    def counts_prefix(self) -> str:
        """Per-stage counts written by the pipeline itself, assembled into report.json."""
        return join(self.root, "rejected", "_counts")

    @property
    def report_json(self) -> str:
        return join(self.root, "report.json")

    @property
    def model_dir(self) -> str:
        return self.model_root or join(self.root, "model")

    @property
    def keras_model(self) -> str:
        return join(self.model_dir, "model.keras")

    @property
    def trained_spec_json(self) -> str:
        """The spec the model was trained with (``mmoe train --model`` may change the architecture)."""
        return join(self.model_dir, "spec.json")

    @property
    def history_json(self) -> str:
        return join(self.model_dir, "history.json")

    @property
    def logs_dir(self) -> str:
        return join(self.model_dir, "logs")

    @property
    def plots_dir(self) -> str:
        return join(self.model_dir, "plots")

    @property
    def learning_curves_png(self) -> str:
        return join(self.plots_dir, "learning_curves.png")

    @property
    def gates_png(self) -> str:
        """Mean gate weight per task and expert on the eval split."""
        return join(self.plots_dir, "gates.png")

    @property
    def gate_usage_png(self) -> str:
        """Gate weights per expert by epoch."""
        return join(self.plots_dir, "gate_usage.png")

    @property
    def gate_usage_json(self) -> str:
        return join(self.model_dir, "gate_usage.json")

    @property
    def report_html(self) -> str:
        return join(self.model_dir, "report.html")

    @property
    def serving_weights(self) -> str:
        """Weights of the serving model (shared with the training model), read by export."""
        return join(self.model_dir, "serving.weights.h5")

    @property
    def best_weights(self) -> str:
        """The best epoch's weights of the trained (core) model, kept while training."""
        return join(self.model_dir, "best.weights.h5")

    @property
    def checkpoints_dir(self) -> str:
        """A running job's checkpoints (weights, optimizer, loop position); removed when it ends."""
        return join(self.model_dir, "checkpoints")

    @property
    def checkpoint_history_json(self) -> str:
        """The history of the epochs a checkpointed job has run, for the job that resumes it."""
        return join(self.checkpoints_dir, "history.json")

    def worker(self, task_id: int) -> "Workdir":
        """This run as a worker other than the chief writes it: the same data and artifacts,
        training outputs under ``model/workers/worker-<task_id>``."""
        return replace(self, model_root=join(self.model_dir, "workers", f"worker-{task_id}"))

    def baseline(self, architecture: str) -> "Workdir":
        """This run's data and artifacts, with training outputs under ``model/baselines/<architecture>``."""
        return replace(self, model_root=join(self.model_dir, "baselines", architecture))

    @property
    def metrics_json(self) -> str:
        return join(self.root, "metrics.json")

    @property
    def export_base(self) -> str:
        return join(self.root, "export")


class StaleArtifactError(UserError, ValueError):
    """An artifact written by another version of this project, in a format this one cannot read."""


@dataclass(frozen=True)
class NumericStats:
    """Statistics of one numeric feature over the train split, in its transform's space.

    Args:
        count: int. Values seen.
        mean: float. Mean (of log1p(x) for ``log1p`` features).
        variance: float. Population variance, same space.
        min: float. Smallest raw value.
        max: float. Largest raw value.
    """

    count: int
    mean: float
    variance: float
    min: float
    max: float


@dataclass(frozen=True)
class Statistics:
    """Contents of ``artifacts/statistics.json``.

    Args:
        numeric: feature -> NumericStats (zscore and log1p features).
        quantiles: feature -> sorted bucket boundaries (quantile features).
        vocabulary_sizes: feature -> number of entries in its vocabulary file.
        train_rows: int. Rows in the train split the statistics were computed on.
        label_means: task -> mean label over the train rows where it is observed, after the
            task's ``label_transform`` (a binary task's positive rate). Absent in files written
            before it existed; the model then starts its output biases at 0.
    """

    numeric: Mapping[str, NumericStats] = field(default_factory=dict)
    quantiles: Mapping[str, list[float]] = field(default_factory=dict)
    vocabulary_sizes: Mapping[str, int] = field(default_factory=dict)
    train_rows: int = 0
    label_means: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": STATISTICS_FORMAT_VERSION,
                "train_rows": self.train_rows,
                "numeric": {k: vars(v) for k, v in sorted(self.numeric.items())},
                "quantiles": {k: list(v) for k, v in sorted(self.quantiles.items())},
                "vocabulary_sizes": dict(sorted(self.vocabulary_sizes.items())),
                "label_means": dict(sorted(self.label_means.items())),
            },
            indent=2,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> "Statistics":
        data = json.loads(text)
        if data.get("format_version") != STATISTICS_FORMAT_VERSION:
            raise StaleArtifactError(
                f"statistics.json has format_version {data.get('format_version')!r}, "
                f"expected {STATISTICS_FORMAT_VERSION}: rerun `mmoe preprocess`"
            )
        return cls(
            numeric={k: NumericStats(**v) for k, v in data["numeric"].items()},
            quantiles={k: [float(b) for b in v] for k, v in data["quantiles"].items()},
            vocabulary_sizes={k: int(v) for k, v in data["vocabulary_sizes"].items()},
            train_rows=int(data["train_rows"]),
            label_means={k: float(v) for k, v in data.get("label_means", {}).items()},
        )


def preprocess_problem(report_text: str | None) -> str | None:
    """Why a workdir's data must not be trained on, or None when its preprocess completed.

    Args:
        report_text: the contents of ``report.json``, or None when there is none (``preprocess``
            removes it first and writes it last, so a missing report means a run that never
            finished, or was never run).

    Returns:
        None when the report's ``status`` is :data:`PREPROCESS_COMPLETE` (or absent: reports
        written before the status existed), else one line saying what went wrong.
    """
    if report_text is None:
        return "report.json is missing: `mmoe preprocess` did not finish on this workdir"
    try:
        report = json.loads(report_text)
    except ValueError as exc:
        return f"report.json is not valid JSON ({exc}): rerun `mmoe preprocess`"
    status = report.get("status", PREPROCESS_COMPLETE) if isinstance(report, dict) else None
    if status == PREPROCESS_COMPLETE:
        return None
    if status == PREPROCESS_FAILED:
        return f"the last `mmoe preprocess` failed: {report.get('failure', 'no reason recorded')}"
    return f"report.json has an unknown status {status!r}: rerun `mmoe preprocess`"
