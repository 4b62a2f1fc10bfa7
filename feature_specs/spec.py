"""The feature spec: dataclasses, loading and validation.

A spec is one YAML file that declares a data set's raw columns, how each feature is transformed,
the tasks and their labels, the ranking score, the split, and the model and training settings.
Every stage (pipeline, model, server) reads features, labels and tasks from it and from nowhere
else. Loading validates everything and reports each error by its key path, e.g.
``features[3].transform: unknown transform 'bucket'``.

This module imports neither TensorFlow, Keras nor Beam.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

DTYPES = ("string", "int", "float", "timestamp")
TRANSFORMS = {
    "string": ("vocabulary", "hashing"),
    "int": ("vocabulary", "hashing", "zscore", "log1p", "quantile"),
    "float": ("zscore", "log1p", "quantile"),
}
NUMERIC_TRANSFORMS = ("zscore", "log1p", "quantile")
ROLES = ("feature", "bias")
TASK_KINDS = ("binary", "regression")
LOSSES = {"binary": ("binary_crossentropy",), "regression": ("mse", "huber")}
LABEL_TRANSFORMS = ("none", "log1p")
SCORE_KINDS = ("weighted_sum", "product")
SPLIT_METHODS = ("hash", "timestamp")
ARCHITECTURES = ("mmoe", "omoe", "shared_bottom", "single_task", "cgc", "ple")


class SpecError(ValueError):
    """A spec that cannot be used; the message starts with the offending key path."""

    def __init__(self, path: str, message: str, source: str | None = None):
        self.path = path
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path}: {message}")


@dataclass(frozen=True)
class Column:
    """A raw column with the checks every row must pass.

    Args:
        name: str. Column name in the raw log.
        dtype: str. One of ``string``, ``int``, ``float``, ``timestamp`` (int seconds since epoch).
        required: bool. A row without a value is rejected. Defaults to True.
        default: value used where ``required`` is False and the value is missing.
        min: optional lower bound (inclusive) for numeric columns.
        max: optional upper bound (inclusive) for numeric columns.
    """

    name: str
    dtype: str
    required: bool = True
    default: Any = None
    min: float | None = None
    max: float | None = None

    @property
    def is_numeric(self) -> bool:
        return self.dtype in ("int", "float", "timestamp")


@dataclass(frozen=True)
class Feature(Column):
    """A column the model reads, with its transform.

    Args:
        transform: str. ``vocabulary`` (StringLookup/IntegerLookup from the train split's top
            values), ``hashing``, ``zscore``, ``log1p`` (log1p then z-score) or ``quantile``
            (bucketized at the train split's approximate quantiles, then embedded).
        top_k: int. Largest vocabulary size (vocabulary). Defaults to 10000.
        min_count: int. Values seen fewer times in the train split are out of vocabulary.
        num_oov: int. Out-of-vocabulary buckets. Defaults to 1.
        num_bins: int. Hash buckets (hashing).
        num_buckets: int. Quantile buckets (quantile).
        embedding_dim: int. Embedding width for categorical and bucketized features.
        role: str. ``feature`` (model input) or ``bias`` (fed to a shallow tower that adds to the
            binary tasks' logits in training; at serving the feature is fixed to ``serving_value``).
        serving_value: the value a bias feature takes at serving (e.g. position 1, so predicted
            probabilities mean "if shown at the top"); required for role ``bias``.
    """

    transform: str = "vocabulary"
    top_k: int = 10000
    min_count: int = 1
    num_oov: int = 1
    num_bins: int = 0
    num_buckets: int = 0
    embedding_dim: int = 8
    role: str = "feature"
    serving_value: Any = None

    @property
    def is_categorical(self) -> bool:
        return self.transform in ("vocabulary", "hashing", "quantile")


@dataclass(frozen=True)
class Task:
    """One prediction task.

    Args:
        name: str. Task name; outputs and losses are keyed by it.
        label: str. Label column.
        kind: str. ``binary`` or ``regression``.
        loss: str. ``binary_crossentropy`` for binary; ``mse`` or ``huber`` for regression.
        weight: float. Loss weight.
        label_transform: str. ``none`` or ``log1p``: regression targets are learned in this space
            and reported in original units.
        mask: optional column name; the task's loss counts only rows where it is > 0 (e.g.
            engagement observed only where clicked).
        unit: str. Unit of a regression label, used in metric names (``rmse_seconds``).
    """

    name: str
    label: str
    kind: str
    loss: str
    weight: float = 1.0
    label_transform: str = "none"
    mask: str | None = None
    unit: str = ""


@dataclass(frozen=True)
class Ranking:
    """How per-task outputs combine into one ranking score.

    Args:
        group_by: str or None. Request id column: candidates of one request are ranked together
            (per-request ranking metrics need it); None for data without requests.
        kind: str. ``product``: prod_t output_t ** weight_t (click probability times engagement
            seconds is expected engagement); ``weighted_sum``: sum_t weight_t * output_t.
        weights: mapping task name -> weight. Outputs are in original units (probability, seconds).
    """

    group_by: str | None
    kind: str
    weights: Mapping[str, float]


@dataclass(frozen=True)
class Split:
    """Train/eval split.

    Args:
        method: str. ``hash`` (seeded hash of ``key``) or ``timestamp`` (rows at or after
            ``cutoff`` go to eval).
        key: str. Column hashed (hash) or compared (timestamp).
        eval_fraction: float. Share of keys in eval (hash).
        cutoff: int. Timestamp cut (timestamp).
        seed: int. Salt of the hash.
    """

    method: str = "hash"
    key: str = ""
    eval_fraction: float = 0.2
    cutoff: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and hyper-parameters of the multi-task model.

    Args:
        architecture: str. ``mmoe`` (shared experts, one gate per task), ``omoe`` (one gate shared
            by all tasks), ``shared_bottom`` (one shared MLP), ``single_task`` (an independent
            network per task, embeddings included), ``cgc`` (task-specific plus shared experts,
            Tang et al. 2020) or ``ple`` (``num_levels`` stacked CGC levels).
        num_experts: int. Shared experts (mmoe, omoe, cgc, ple).
        task_experts: int. Experts owned by each task (cgc, ple).
        num_levels: int. Extraction levels (ple).
        expert_units: list of int. Each expert's MLP widths.
        bottom_units: list of int. The bottom MLP of shared_bottom and single_task.
        tower_units: list of int. Each task tower's hidden widths (a final unit is added).
        gate_temperature: float. Softmax temperature of the gates.
        gate_units: list of int. Hidden widths of an MLP in front of each gate's softmax.
        gate_top_k: int. Keep only the k largest gate weights per example (renormalized); 0 = all.
        expert_dropout: float. In training, drop each expert from a gate's mixture with this
            probability (weights renormalized), against gate polarization.
        load_balance_weight: float. Weight of the auxiliary loss on expert importance
            (``E * sum_e mean_batch(g_e)^2``, 1 when balanced); 0 disables it.
        bias_tower_units: list of int. Hidden widths of the shallow bias tower.
        dropout: float. Dropout in towers.
        fused_experts: bool. Run all experts as one stacked contraction (default) instead of a
            loop of per-expert Dense layers; same function, different speed.
    """

    architecture: str = "mmoe"
    num_experts: int = 8
    task_experts: int = 1
    num_levels: int = 2
    expert_units: tuple[int, ...] = (64,)
    bottom_units: tuple[int, ...] = (128,)
    tower_units: tuple[int, ...] = (32,)
    gate_temperature: float = 1.0
    gate_units: tuple[int, ...] = ()
    gate_top_k: int = 0
    expert_dropout: float = 0.0
    load_balance_weight: float = 0.0
    bias_tower_units: tuple[int, ...] = ()
    dropout: float = 0.0
    fused_experts: bool = True


LOSS_WEIGHTINGS = ("fixed", "uncertainty")


@dataclass(frozen=True)
class EarlyStopping:
    """Which eval metric picks the best epoch, and when training stops (``training.early_stopping``).

    Args:
        metric: str. ``val_loss`` (the weighted total), ``val_<task>_loss`` or, for binary
            tasks, ``val_<task>_auc``. Defaults to ``val_loss``.
        patience: int. Stop after this many epochs without improvement; 0 never stops early
            (the best epoch is still the one kept). Defaults to 0.
        min_delta: float. Smallest change that counts as an improvement. Defaults to 0.
    """

    metric: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0

    @property
    def mode(self) -> str:
        """``max`` for AUC, ``min`` for losses."""
        return "max" if self.metric.endswith("_auc") else "min"


@dataclass(frozen=True)
class TrainingConfig:
    """Training loop settings.

    Args:
        batch_size: int. Global batch size (split across replicas when distributed).
        epochs: int. Passes over the train split.
        learning_rate: float. Adam's learning rate.
        shuffle_buffer: int. Examples in the shuffle buffer.
        seed: int. Seeds initialization, shuffling and dropout.
        loss_weighting: str. ``fixed`` (each task's ``weight``) or ``uncertainty`` (Kendall et
            al., CVPR 2018: a learned log-variance per task, scaled by the task's ``weight``).
        checkpoint_every_steps: int. Save a checkpoint every this many steps (and at every
            epoch end) so a killed run resumes where it stopped; 0 = epoch ends only.
        jit_compile: bool. Compile the train step with XLA.
        steps_per_execution: int. Optimizer steps run in one call of the compiled training loop
            (Keras' ``steps_per_execution``): the per-call host work (Python, function dispatch,
            reading the losses back) is paid once per call. The progress bar and the logs update
            between calls; checkpoints still land on every ``checkpoint_every_steps``-th step.
        cache: bool. Keep the preprocessed train batches in memory after the first epoch
            (examples shuffled once, batch order reshuffled each epoch): faster when the train
            split fits in memory.
        lazy_update_min_rows: int. Embedding tables with at least this many rows are updated
            lazily: Adam on the rows a batch looked up only, so a step costs the same at any
            vocabulary size (``mmoe.optimizers.LazyAdam``); smaller tables get Adam's dense
            update. 0: every table lazy; above the largest vocabulary: every table dense.
        early_stopping: EarlyStopping. The metric that picks the kept model, and patience.
    """

    batch_size: int = 512
    epochs: int = 3
    learning_rate: float = 0.002
    shuffle_buffer: int = 10000
    seed: int = 42
    loss_weighting: str = "fixed"
    checkpoint_every_steps: int = 200
    jit_compile: bool = False
    steps_per_execution: int = 8
    cache: bool = False
    lazy_update_min_rows: int = 10_000
    early_stopping: EarlyStopping = EarlyStopping()


UNKNOWN_COLUMN_POLICIES = ("ignore", "reject")


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the batch preprocessing pipeline (the spec's ``pipeline:`` section).

    Args:
        unknown_columns: str. What to do with input columns the spec does not declare: ``ignore``
            (dropped from the output, counted per column in the report) or ``reject`` (the row is
            rejected with reason ``unknown_column``). Defaults to ``ignore``.
        max_reject_rate: float in [0, 1]. The run fails (after writing report.json) when more than
            this share of the input rows is rejected. Defaults to 0.05.
    """

    unknown_columns: str = "ignore"
    max_reject_rate: float = 0.05


EVENT_AGGREGATES = ("flag", "count", "sum", "max")


@dataclass(frozen=True)
class EventSource:
    """One event log joined to the impressions by impression id (the spec's ``sources.events``).

    Args:
        name: str. The source's name; its input is given per run (``--events NAME=PATTERN``).
        label: str. The declared column this source's events derive.
        aggregate: str. How the events of one impression inside the attribution window become
            the label: ``flag`` (1 if any, else 0), ``count``, ``sum`` or ``max`` of ``value``
            (0 when there is none).
        value: str or None. The event field summed or maximized (``sum``, ``max``).
        timestamp: str. The event's time field (seconds since the epoch). Defaults to ``timestamp``.
    """

    name: str
    label: str
    aggregate: str = "flag"
    value: str | None = None
    timestamp: str = "timestamp"


@dataclass(frozen=True)
class Sources:
    """Labels joined from event logs (the spec's ``sources:`` section).

    Args:
        impression_id: str. The declared column that keys impressions; events carry it too.
        timestamp: str. The declared impression time column (seconds since the epoch).
        attribution_window_seconds: int. An event counts for an impression when it happens at or
            after the impression and at most this many seconds later.
        events: the event sources, each deriving one label column.
    """

    impression_id: str
    timestamp: str
    attribution_window_seconds: int = 3600
    events: tuple[EventSource, ...] = ()


@dataclass(frozen=True)
class FeatureSpec:
    """A validated feature spec. Build it with :func:`load_spec` or :func:`spec_from_dict`."""

    name: str
    features: tuple[Feature, ...]
    columns: tuple[Column, ...]
    tasks: tuple[Task, ...]
    ranking: Ranking
    split: Split
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    description: str = ""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sources: Sources | None = None

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """Every raw column a row must carry, features first, in declaration order."""
        return self.features + self.columns

    @property
    def model_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.role == "feature")

    @property
    def bias_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.role == "bias")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def column(self, name: str) -> Column:
        for column in self.all_columns:
            if column.name == name:
                return column
        raise KeyError(f"spec {self.name!r} has no column {name!r}")

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"spec {self.name!r} has no task {name!r}")

    def to_dict(self) -> dict:
        """The normalized spec as plain data; ``spec_from_dict(spec.to_dict()) == spec``."""
        def column(value: dict) -> dict:
            out = {k: v for k, v in value.items() if v is not None}
            out["type"] = out.pop("dtype")
            return out

        def plain(value):
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items() if v is not None}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        data = plain(dataclasses.asdict(self))
        data["features"] = [column(f) for f in data["features"]]
        data["columns"] = [column(c) for c in data["columns"]]
        data["ranking"]["weights"] = dict(self.ranking.weights)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# --------------------------------------------------------------------------------------------
# Loading


class _Node:
    """A mapping read at a key path; unknown keys are errors, so typos never pass silently."""

    def __init__(self, data: Any, path: str, source: str | None):
        if not isinstance(data, Mapping):
            raise SpecError(path or "<root>", f"expected a mapping, got {type(data).__name__}", source)
        self.data, self.path, self.source = data, path, source
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(self._key(key), message, self.source)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = dataclasses.MISSING):
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is dataclasses.MISSING:
                raise self.error(key, "required key is missing")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"expected {_kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"must be finite, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = dataclasses.MISSING) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"unknown value {value!r}; expected one of {', '.join(choices)}")
        return value

    def positive_int(self, key: str, default: Any = dataclasses.MISSING, minimum: int = 1) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def int_list(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self.get(key, (list, tuple), default)
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise self.error(f"{key}[{i}]", f"expected a positive integer, got {item!r}")
        return tuple(value)

    def child(self, key: str, required: bool = True) -> "_Node":
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "required section is missing")
            return _Node({}, self._key(key), self.source)
        return _Node(self.data[key], self._key(key), self.source)

    def items(self, key: str) -> list["_Node"]:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {type(value).__name__}")
        return [_Node(item, f"{self._key(key)}[{i}]", self.source) for i, item in enumerate(value)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (check its spelling)")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", tuple: "a list", dict: "a mapping"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _read_column(node: _Node) -> dict:
    name = node.get("name", str)
    if not name.isidentifier():
        raise node.error("name", f"must be a Python identifier (letters, digits, _), got {name!r}")
    dtype = node.choice("type", DTYPES)
    required = node.get("required", bool, True)
    default = node.get("default", (str, int, float), None)
    if not required and default is None:
        raise node.error("default", "a column with required: false needs a default value")
    if default is not None:
        default = _coerce_default(node, dtype, default)
    bounds = {}
    for key in ("min", "max"):
        bound = node.get(key, float, None)
        if bound is not None and dtype == "string":
            raise node.error(key, f"bounds apply to numeric columns; {name!r} is a string")
        bounds[key] = bound
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise node.error("max", f"max {bounds['max']} is below min {bounds['min']}")
    if default is not None and dtype != "string":
        if (bounds["min"] is not None and default < bounds["min"]) or (bounds["max"] is not None and default > bounds["max"]):
            raise node.error("default", f"default {default} is outside [min, max] = [{bounds['min']}, {bounds['max']}]")
    return dict(name=name, dtype=dtype, required=required, default=default, **bounds)


def _coerce_default(node: _Node, dtype: str, value: Any, key: str = "default") -> Any:
    """``value`` (a default or serving value) as the column's Python type."""
    if dtype == "string":
        return str(value)
    if dtype in ("int", "timestamp"):
        if isinstance(value, str) or (isinstance(value, float) and not value.is_integer()):
            raise node.error(key, f"expected an integer for type {dtype}, got {value!r}")
        return int(value)
    if isinstance(value, str):
        raise node.error(key, f"expected a number for type float, got {value!r}")
    return float(value)


def _read_feature(node: _Node) -> Feature:
    base = _read_column(node)
    dtype = base["dtype"]
    if dtype == "timestamp":
        raise node.error("type", "timestamp columns cannot be model features; list them under columns")
    transform = node.choice("transform", TRANSFORMS[dtype])
    kwargs = dict(
        transform=transform,
        role=node.choice("role", ROLES, "feature"),
        embedding_dim=node.positive_int("embedding_dim", 8),
        top_k=node.positive_int("top_k", 10000),
        min_count=node.positive_int("min_count", 1),
        num_oov=node.positive_int("num_oov", 1),
        num_bins=node.positive_int("num_bins", 0, minimum=0),
        num_buckets=node.positive_int("num_buckets", 0, minimum=0),
    )
    if transform == "hashing" and kwargs["num_bins"] < 2:
        raise node.error("num_bins", "hashing needs num_bins >= 2")
    if transform == "quantile" and kwargs["num_buckets"] < 2:
        raise node.error("num_buckets", "quantile needs num_buckets >= 2")
    serving_value = node.get("serving_value", (str, int, float), None)
    if kwargs["role"] == "bias":
        if serving_value is None:
            raise node.error("serving_value", "a bias feature needs the value it is fixed to at serving")
        kwargs["serving_value"] = _coerce_default(node, dtype, serving_value, "serving_value")
    elif serving_value is not None:
        raise node.error("serving_value", "only features with role: bias take a serving_value")
    node.finish()
    return Feature(**base, **kwargs)


def _read_task(node: _Node, column_types: Mapping[str, str]) -> Task:
    name = node.get("name", str)
    label = node.get("label", str)
    if label not in column_types:
        raise node.error("label", f"label column {label!r} is not declared under features or columns")
    kind = node.choice("kind", TASK_KINDS)
    if column_types[label] not in ("int", "float"):
        raise node.error("label", f"label column {label!r} must be int or float, is {column_types[label]}")
    loss = node.choice("loss", LOSSES[kind], LOSSES[kind][0])
    weight = node.get("weight", float, 1.0)
    if weight < 0:
        raise node.error("weight", f"must be >= 0, got {weight}")
    label_transform = node.choice("label_transform", LABEL_TRANSFORMS, "none")
    if kind == "binary" and label_transform != "none":
        raise node.error("label_transform", "binary tasks take their label as 0/1")
    mask = node.get("mask", str, None)
    if mask is not None and mask not in column_types:
        raise node.error("mask", f"mask column {mask!r} is not declared under features or columns")
    unit = node.get("unit", str, "")
    if unit and not unit.isidentifier():
        raise node.error("unit", f"must be a short identifier such as seconds, got {unit!r}")
    node.finish()
    return Task(name=name, label=label, kind=kind, loss=loss, weight=weight,
                label_transform=label_transform, mask=mask, unit=unit)


def _check_unique(nodes: list[_Node], names: list[str], seen: dict[str, str]) -> None:
    for node, name in zip(nodes, names):
        if name in seen:
            raise node.error("name", f"duplicate name {name!r} (first declared at {seen[name]})")
        seen[name] = f"{node.path}.name"


def _read_model(node: _Node) -> ModelConfig:
    defaults = ModelConfig()
    model = ModelConfig(
        architecture=node.choice("architecture", ARCHITECTURES, defaults.architecture),
        num_experts=node.positive_int("num_experts", defaults.num_experts),
        task_experts=node.positive_int("task_experts", defaults.task_experts),
        num_levels=node.positive_int("num_levels", defaults.num_levels),
        expert_units=node.int_list("expert_units", defaults.expert_units),
        bottom_units=node.int_list("bottom_units", defaults.bottom_units),
        tower_units=node.int_list("tower_units", defaults.tower_units),
        gate_temperature=node.get("gate_temperature", float, defaults.gate_temperature),
        gate_units=node.int_list("gate_units", defaults.gate_units),
        gate_top_k=node.positive_int("gate_top_k", defaults.gate_top_k, minimum=0),
        expert_dropout=node.get("expert_dropout", float, defaults.expert_dropout),
        load_balance_weight=node.get("load_balance_weight", float, defaults.load_balance_weight),
        bias_tower_units=node.int_list("bias_tower_units", defaults.bias_tower_units),
        dropout=node.get("dropout", float, defaults.dropout),
        fused_experts=node.get("fused_experts", bool, defaults.fused_experts),
    )
    if not model.expert_units:
        raise node.error("expert_units", "experts need at least one layer")
    if not model.bottom_units:
        raise node.error("bottom_units", "the bottom needs at least one layer")
    if model.gate_temperature <= 0:
        raise node.error("gate_temperature", f"must be > 0, got {model.gate_temperature}")
    if model.gate_top_k > model.num_experts and model.architecture in ("mmoe", "omoe"):
        raise node.error("gate_top_k", f"must be <= num_experts ({model.num_experts}), got {model.gate_top_k}")
    for key in ("dropout", "expert_dropout"):
        if not 0.0 <= getattr(model, key) < 1.0:
            raise node.error(key, f"must be in [0, 1), got {getattr(model, key)}")
    if model.load_balance_weight < 0:
        raise node.error("load_balance_weight", f"must be >= 0, got {model.load_balance_weight}")
    node.finish()
    return model


def _early_stopping_metrics(tasks) -> list[str]:
    names = ["val_loss"]
    for task in tasks:
        names.append(f"val_{task.name}_loss")
        if task.kind == "binary":
            names.append(f"val_{task.name}_auc")
    return names


def _read_early_stopping(node: _Node, tasks) -> EarlyStopping:
    defaults = EarlyStopping()
    config = EarlyStopping(
        metric=node.choice("metric", tuple(_early_stopping_metrics(tasks)), defaults.metric),
        patience=node.positive_int("patience", defaults.patience, minimum=0),
        min_delta=node.get("min_delta", float, defaults.min_delta),
    )
    if config.min_delta < 0:
        raise node.error("min_delta", f"must be >= 0, got {config.min_delta}")
    node.finish()
    return config


def _read_training(node: _Node, tasks) -> TrainingConfig:
    defaults = TrainingConfig()
    training = TrainingConfig(
        batch_size=node.positive_int("batch_size", defaults.batch_size),
        epochs=node.positive_int("epochs", defaults.epochs),
        learning_rate=node.get("learning_rate", float, defaults.learning_rate),
        shuffle_buffer=node.positive_int("shuffle_buffer", defaults.shuffle_buffer),
        seed=node.get("seed", int, defaults.seed),
        loss_weighting=node.choice("loss_weighting", LOSS_WEIGHTINGS, defaults.loss_weighting),
        checkpoint_every_steps=node.positive_int(
            "checkpoint_every_steps", defaults.checkpoint_every_steps, minimum=0
        ),
        jit_compile=node.get("jit_compile", bool, defaults.jit_compile),
        steps_per_execution=node.positive_int("steps_per_execution", defaults.steps_per_execution),
        cache=node.get("cache", bool, defaults.cache),
        lazy_update_min_rows=node.positive_int("lazy_update_min_rows", defaults.lazy_update_min_rows, minimum=0),
        early_stopping=_read_early_stopping(node.child("early_stopping", required=False), tasks),
    )
    if training.learning_rate <= 0:
        raise node.error("learning_rate", f"must be > 0, got {training.learning_rate}")
    node.finish()
    return training


def _read_pipeline(node: _Node) -> PipelineConfig:
    defaults = PipelineConfig()
    config = PipelineConfig(
        unknown_columns=node.choice("unknown_columns", UNKNOWN_COLUMN_POLICIES, defaults.unknown_columns),
        max_reject_rate=node.get("max_reject_rate", float, defaults.max_reject_rate),
    )
    if not 0.0 <= config.max_reject_rate <= 1.0:
        raise node.error("max_reject_rate", f"must be in [0, 1], got {config.max_reject_rate}")
    node.finish()
    return config


def _read_sources(node: _Node, column_types: Mapping[str, str]) -> Sources:
    impression_id = node.get("impression_id", str)
    if impression_id not in column_types:
        raise node.error("impression_id", f"column {impression_id!r} is not declared")
    timestamp = node.get("timestamp", str)
    if column_types.get(timestamp) not in ("timestamp", "int"):
        raise node.error("timestamp", f"{timestamp!r} must be a declared timestamp or int column")
    window = node.positive_int("attribution_window_seconds", 3600)
    events, labels = [], {}
    event_nodes = node.items("events")
    if not event_nodes:
        raise node.error("events", "name at least one event source")
    for event_node in event_nodes:
        name = event_node.get("name", str)
        if not name.isidentifier():
            raise event_node.error("name", f"must be an identifier, got {name!r}")
        if name in {e.name for e in events}:
            raise event_node.error("name", f"duplicate event source {name!r}")
        label = event_node.get("label", str)
        if column_types.get(label) not in ("int", "float"):
            raise event_node.error("label", f"label column {label!r} must be a declared int or float column")
        if label in labels:
            raise event_node.error("label", f"{label!r} is already derived by source {labels[label]!r}")
        labels[label] = name
        aggregate = event_node.choice("aggregate", EVENT_AGGREGATES, "flag")
        value = event_node.get("value", str, None)
        if aggregate in ("sum", "max") and value is None:
            raise event_node.error("value", f"aggregate {aggregate} needs the event field to {aggregate}")
        if aggregate in ("flag", "count") and value is not None:
            raise event_node.error("value", f"aggregate {aggregate} takes no value field")
        events.append(EventSource(name=name, label=label, aggregate=aggregate, value=value,
                                  timestamp=event_node.get("timestamp", str, "timestamp")))
        event_node.finish()
    node.finish()
    return Sources(impression_id=impression_id, timestamp=timestamp, attribution_window_seconds=window,
                   events=tuple(events))


def spec_from_dict(data: Mapping, source: str | None = None) -> FeatureSpec:
    """Validates plain data (parsed YAML or spec.json) and returns a :class:`FeatureSpec`.

    Raises:
        SpecError: naming the key path of the first problem found.
    """
    root = _Node(data, "", source)
    name = root.get("name", str)
    description = root.get("description", str, "")

    feature_nodes = root.items("features")
    if not feature_nodes:
        raise root.error("features", "at least one feature is required")
    features = tuple(_read_feature(n) for n in feature_nodes)
    column_nodes = root.items("columns")
    columns = []
    for node in column_nodes:
        columns.append(Column(**_read_column(node)))
        node.finish()
    columns = tuple(columns)
    seen: dict[str, str] = {}
    _check_unique(feature_nodes, [f.name for f in features], seen)
    _check_unique(column_nodes, [c.name for c in columns], seen)
    column_types = {c.name: c.dtype for c in features + columns}
    if not any(f.role == "feature" for f in features):
        raise root.error("features", "at least one feature must have role: feature")

    task_nodes = root.items("tasks")
    if not task_nodes:
        raise root.error("tasks", "at least one task is required")
    tasks = tuple(_read_task(n, column_types) for n in task_nodes)
    task_seen: dict[str, str] = {}
    _check_unique(task_nodes, [t.name for t in tasks], task_seen)
    label_names = {t.label for t in tasks}
    for node, feature in zip(feature_nodes, features):
        if feature.name in label_names:
            raise node.error("name", f"{feature.name!r} is a task label and cannot be a model feature")

    ranking_node = root.child("ranking")
    group_by = ranking_node.get("group_by", str, None)
    if group_by is not None and group_by not in column_types:
        raise ranking_node.error("group_by", f"column {group_by!r} is not declared")
    score_kind = ranking_node.choice("kind", SCORE_KINDS, "weighted_sum")
    weights_node = ranking_node.child("weights")
    weights = {}
    for task_name in list(weights_node.data):
        if task_name not in task_seen:
            raise weights_node.error(task_name, f"unknown task {task_name!r}")
        weights[task_name] = weights_node.get(task_name, float)
    if not weights:
        raise ranking_node.error("weights", "name at least one task's weight")
    ranking_node.finish()
    ranking = Ranking(group_by=group_by, kind=score_kind, weights=weights)

    split_node = root.child("split")
    method = split_node.choice("method", SPLIT_METHODS, "hash")
    key = split_node.get("key", str)
    if key not in column_types:
        raise split_node.error("key", f"column {key!r} is not declared")
    eval_fraction = split_node.get("eval_fraction", float, 0.2)
    if not 0.0 < eval_fraction < 1.0:
        raise split_node.error("eval_fraction", f"must be in (0, 1), got {eval_fraction}")
    cutoff = split_node.get("cutoff", int, None)
    if method == "timestamp":
        if column_types[key] not in ("timestamp", "int"):
            raise split_node.error("key", f"a timestamp split needs an int/timestamp column, {key!r} is {column_types[key]}")
        if cutoff is None:
            raise split_node.error("cutoff", "a timestamp split needs a cutoff")
    split = Split(method=method, key=key, eval_fraction=eval_fraction, cutoff=cutoff,
                  seed=split_node.get("seed", int, 0))
    split_node.finish()

    model = _read_model(root.child("model", required=False))

    training = _read_training(root.child("training", required=False), tasks)
    pipeline = _read_pipeline(root.child("pipeline", required=False))
    sources = _read_sources(root.child("sources"), column_types) if root.data.get("sources") is not None else None
    root.used.add("sources")
    root.finish()
    return FeatureSpec(name=name, description=description, features=features, columns=columns,
                       tasks=tasks, ranking=ranking, split=split, model=model, training=training,
                       pipeline=pipeline, sources=sources)


def load_spec(path: str) -> FeatureSpec:
    """Loads and validates a YAML (or JSON) spec file.

    Args:
        path: str. Local path of a ``.yaml``/``.yml``/``.json`` spec.

    Raises:
        SpecError: with the file name and the key path of the problem.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise SpecError("<yaml>", f"not valid YAML: {exc}", path) from exc
    except OSError as exc:
        raise SpecError("<file>", f"cannot read spec: {exc.strerror}", path) from exc
    return spec_from_dict(data if data is not None else {}, source=path)


def bundled_spec_path(name: str) -> str:
    """Path of a spec shipped in this package, e.g. ``bundled_spec_path('clicklog')``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.yaml")
