"""The spec reader: plain data (parsed YAML or spec.json) to a validated :class:`FeatureSpec`.

One reader per section, each checking its keys' types, ranges and cross-references and raising
:class:`~feature_specs.spec_nodes.SpecError` at the offending key path. A key left out takes the
default of its dataclass field (:func:`~feature_specs.spec.field_default`), never a literal written
here. Plain Python: no TensorFlow, Keras or Beam.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from feature_specs.spec import (
    DTYPES,
    EVENT_AGGREGATES,
    FUNNEL_HEADS,
    HEADS,
    LABEL_TRANSFORMS,
    LIST_DTYPES,
    LIST_POOLINGS,
    LIST_TOO_LONG,
    LIST_TRANSFORMS,
    MAX_LIST_LENGTH,
    GATE_TYPES,
    EMBEDDING_L2_PER,
    GRADIENT_SURGERIES,
    LOSS_WEIGHTINGS,
    LOSSES,
    MISSING_KEY_RULES,
    TABLE_JOINS,
    MAX_BATCH_SIZE,
    MAX_COUNT,
    MAX_EMBEDDING_DIM,
    MAX_EPOCHS,
    MAX_EXPERTS,
    MAX_GRADNORM_ALPHA,
    MAX_LAYERS,
    MAX_QUANTILE_BUCKETS,
    MAX_SHUFFLE_BUFFER,
    MAX_TABLE_ROWS,
    MAX_UNITS,
    MEAN_LOSSES,
    ROLES,
    SCORE_KINDS,
    SPLIT_METHODS,
    TASK_KINDS,
    TRANSFORMS,
    UNKNOWN_COLUMN_POLICIES,
    Column,
    EarlyStopping,
    EventSource,
    Feature,
    FeatureSpec,
    HistorySpec,
    ListSpec,
    ModelConfig,
    PipelineConfig,
    Ranking,
    Sources,
    Split,
    Table,
    Task,
    TrainingConfig,
    field_default,
)
from feature_specs.spec_file import read_spec_data
from feature_specs.spec_nodes import Node, quoted
from feature_specs.values import InvalidValue, typed_value


def _read_list(node: Node, name: str, dtype: str) -> ListSpec:
    """A column's ``list:`` block (``{}`` takes every default)."""
    if dtype not in LIST_DTYPES:
        raise node.error("type", f"list elements are {' or '.join(LIST_DTYPES)}; {quoted(name)} has type {dtype}")
    block = node.child("list")
    separator = block.get("separator", str, field_default(ListSpec, "separator"))
    if not separator:
        raise block.error("separator", "must be at least one character")
    spec = ListSpec(
        separator=separator,
        max_length=block.positive_int("max_length", field_default(ListSpec, "max_length"), maximum=MAX_LIST_LENGTH),
        too_long=block.choice("too_long", LIST_TOO_LONG, field_default(ListSpec, "too_long")),
        pooling=block.choice("pooling", LIST_POOLINGS, field_default(ListSpec, "pooling")),
        target=block.get("target", str, field_default(ListSpec, "target")),
    )
    if (spec.pooling == "attention") != (spec.target is not None):
        raise block.error("target", "pooling: attention needs the target feature it attends to; other "
                                    "poolings take no target")
    block.finish()
    return spec


def _read_column(node: Node) -> dict:
    name = node.get("name", str)
    if not name.isidentifier():
        raise node.error("name", f"must be a Python identifier (letters, digits, _), got {quoted(name)}")
    dtype = node.choice("type", DTYPES)
    is_list = "list" in node.data
    list_spec = _read_list(node, name, dtype) if is_list else field_default(Column, "list")
    required = node.get("required", bool, field_default(Column, "required"))
    if is_list and (not required or node.data.get("default") is not None):
        raise node.error("required" if not required else "default",
                         "a list column reads a missing value as the empty list: leave required and default out")
    default = node.get("default", (str, int, float), field_default(Column, "default"))
    if not required and default is None:
        raise node.error("default", "a column with required: false needs a default value")
    if default is not None:
        default = _coerce_default(node, name, dtype, default)
    bounds = {}
    for key in ("min", "max"):
        bound = node.get(key, float, field_default(Column, key))
        if bound is not None and dtype == "string":
            raise node.error(key, f"bounds apply to numeric columns; {quoted(name)} is a string")
        bounds[key] = bound
    if is_list and bounds["min"] is not None and bounds["min"] < 0:
        raise node.error("min", f"int list elements are >= 0 (-1 pads padded lists), got min {bounds['min']:g}")
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise node.error("max", f"max {bounds['max']} is below min {bounds['min']}")
    if default is not None and dtype != "string":
        if (bounds["min"] is not None and default < bounds["min"]) or (bounds["max"] is not None and default > bounds["max"]):
            raise node.error("default", f"default {default} is outside [min, max] = [{bounds['min']}, {bounds['max']}]")
    return dict(name=name, dtype=dtype, required=required, default=default, list=list_spec, **bounds)


def _coerce_default(node: Node, name: str, dtype: str, value: Any, key: str = "default") -> Any:
    """``value`` (a default or serving value) as column ``name``'s Python type, within the range a
    tf.Example holds (int64, float32: the rules of :func:`feature_specs.values.typed_value`)."""
    if dtype == "string":
        return str(value)
    if dtype in ("int", "timestamp"):
        if isinstance(value, str) or (isinstance(value, float) and not value.is_integer()):
            raise node.error(key, f"expected an integer for type {dtype}, got {quoted(value)}")
        value = int(value)
    elif isinstance(value, str):
        raise node.error(key, f"expected a number for type float, got {quoted(value)}")
    try:
        return typed_value(Column(name=name, dtype=dtype), value)
    except InvalidValue as exc:
        raise node.error(key, exc.message) from None


# Integer keys of a feature: (smallest, largest) value each takes.
_FEATURE_INT_RANGES = {
    "embedding_dim": (1, MAX_EMBEDDING_DIM),
    "top_k": (1, MAX_TABLE_ROWS),
    "min_count": (1, MAX_COUNT),
    "num_oov": (1, MAX_TABLE_ROWS),
    "num_bins": (0, MAX_TABLE_ROWS),
    "num_buckets": (0, MAX_QUANTILE_BUCKETS),
}


# The keys of a column's type and checks: a feature that is a side table's column takes them from
# the table and names none of them itself.
_COLUMN_KEYS = ("type", "required", "default", "min", "max", "list")


def _read_feature(node: Node, table_columns: Mapping[str, tuple[str, dict]]) -> Feature:
    looked_up = table_columns.get(node.data.get("name")) if isinstance(node.data.get("name"), str) else None
    if looked_up is not None:
        where, base = looked_up
        node.get("name", str)
        for key in _COLUMN_KEYS:
            if key in node.data:
                raise node.error(key, f"{quoted(base['name'])} is a side table's column (declared at {where}): "
                                      f"its type and checks are the table's; leave {key} out here")
    else:
        base = _read_column(node)
    dtype = base["dtype"]
    if dtype == "timestamp":
        raise node.error("type", "timestamp columns cannot be model features; list them under columns")
    transforms = LIST_TRANSFORMS if base["list"] is not None else TRANSFORMS[dtype]
    transform = node.choice("transform", transforms, field_default(Feature, "transform"))
    kwargs = dict(
        transform=transform,
        role=node.choice("role", ROLES, field_default(Feature, "role")),
        **{key: node.positive_int(key, field_default(Feature, key), minimum=low, maximum=high)
           for key, (low, high) in _FEATURE_INT_RANGES.items()},
    )
    kwargs["oov_dropout"] = node.get("oov_dropout", float, field_default(Feature, "oov_dropout"))
    if not 0.0 <= kwargs["oov_dropout"] < 1.0:
        raise node.error("oov_dropout", f"must be in [0, 1), got {kwargs['oov_dropout']}")
    if kwargs["oov_dropout"] and (transform != "vocabulary" or base["list"] is not None):
        raise node.error("oov_dropout", "applies to scalar vocabulary features only (the rows it drops go to "
                                        "their OOV bucket)")
    if transform == "hashing" and kwargs["num_bins"] < 2:
        raise node.error("num_bins", "hashing needs num_bins >= 2")
    if transform == "quantile" and kwargs["num_buckets"] < 2:
        raise node.error("num_buckets", "quantile needs num_buckets >= 2")
    serving_value = node.get("serving_value", (str, int, float), field_default(Feature, "serving_value"))
    if kwargs["role"] == "bias" and base["list"] is not None:
        raise node.error("role", "a list feature cannot be a bias feature (it has no single serving value)")
    if kwargs["role"] == "bias":
        if serving_value is None:
            raise node.error("serving_value", "a bias feature needs the value it is fixed to at serving")
        kwargs["serving_value"] = _coerce_default(node, base["name"], dtype, serving_value, "serving_value")
    elif serving_value is not None:
        raise node.error("serving_value", "only features with role: bias take a serving_value")
    if "history" in node.data:
        kwargs["history"] = _read_history(node, base["list"])
    node.finish()
    return Feature(**base, **kwargs)


def _read_history(node: Node, list_spec: ListSpec | None) -> HistorySpec:
    """A feature's ``history:`` block; the columns it names are checked by :func:`_check_history_links`."""
    if list_spec is None:
        raise node.error("history", "a history is a list feature: add a list: block (its max_length is the "
                                    "history's length)")
    if list_spec.too_long != "truncate":
        raise node.error("list", "a history keeps its newest max_length items: list.too_long must be truncate")
    block = node.child("history")
    history = HistorySpec(**{key: block.get(key, str) for key in ("user", "item", "time", "positive")})
    block.finish()
    return history


def _check_list_targets(feature_nodes: list[Node], features: tuple[Feature, ...]) -> None:
    """An ``attention`` list's ``target`` is another model feature with one embedded value per row."""
    by_name = {f.name: f for f in features}
    for node, feature in zip(feature_nodes, features):
        target = feature.list.target if feature.list is not None else None
        if target is None:
            continue
        block = node.child("list")
        found = by_name.get(target)
        if found is None or found.role != "feature" or found.name == feature.name:
            raise block.error("target", f"{quoted(target)} is not another model feature (role: feature) of the spec")
        if found.is_list or not found.is_categorical:
            raise block.error("target", f"{quoted(target)} must be a scalar vocabulary, hashing or quantile feature "
                                        "(its embedding is the attention's query)")


def _check_history_links(feature_nodes: list[Node], features: tuple[Feature, ...],
                         columns: Mapping[str, Column]) -> None:
    """Each history names logged scalar columns: ``item`` of the feature's element type, ``time``
    a timestamp or int, ``positive`` a number."""
    wanted = {"user": ("string", "int"), "time": ("timestamp", "int"), "positive": ("int", "float")}
    for node, feature in zip(feature_nodes, features):
        if feature.history is None:
            continue
        block = node.child("history")
        for key in ("user", "item", "time", "positive"):
            name = getattr(feature.history, key)
            column = columns.get(name)
            if column is None or getattr(column, "history", None) is not None:
                raise block.error(key, f"{quoted(name)} is not a column the log holds (declare it under "
                                       "features or columns)")
            if column.is_list:
                raise block.error(key, f"{quoted(name)} is a list column; a history needs one value per row")
            types = wanted.get(key, (feature.dtype,))
            if column.dtype not in types:
                raise block.error(key, f"{quoted(name)} has type {column.dtype}; the history's {key} needs "
                                       f"{' or '.join(types)}")
            if key == "item" and column.dtype == "int" and (column.min is None or column.min < 0):
                raise block.error(key, f"int list elements are >= 0 (-1 pads): give {quoted(name)} min: 0")


def default_loss(kind: str) -> str:
    """The loss a task of ``kind`` (``binary`` or ``regression``) gets when it names none: the
    first of :data:`~feature_specs.spec.LOSSES` for its kind."""
    return LOSSES[kind][0]


def _check_scalar(node: Node, key: str, name: str | None, column_types: Mapping[str, str]) -> None:
    """A key naming a column (a mask, a key, a group) needs one value per row, not a list."""
    if name is not None and column_types.get(name, "").endswith(" list"):
        raise node.error(key, f"{quoted(name)} is a list column; {key} needs one value per row")


def _read_task(node: Node, column_types: Mapping[str, str]) -> Task:
    name = node.get("name", str)
    label = node.get("label", str)
    if label not in column_types:
        raise node.error("label", f"label column {quoted(label)} is not declared under features or columns")
    kind = node.choice("kind", TASK_KINDS)
    if column_types[label] not in ("int", "float"):
        raise node.error("label", f"label column {quoted(label)} must be int or float, is {column_types[label]}")
    loss = node.choice("loss", LOSSES[kind], default_loss(kind))
    weight = node.get("weight", float, field_default(Task, "weight"))
    if weight < 0:
        raise node.error("weight", f"must be >= 0, got {weight}")
    label_transform = node.choice("label_transform", LABEL_TRANSFORMS, field_default(Task, "label_transform"))
    if kind == "binary" and label_transform != field_default(Task, "label_transform"):
        raise node.error("label_transform", "binary tasks take their label as 0/1")
    mask = node.get("mask", str, field_default(Task, "mask"))
    if mask is not None and mask not in column_types:
        raise node.error("mask", f"mask column {quoted(mask)} is not declared under features or columns")
    _check_scalar(node, "mask", mask, column_types)
    unit = node.get("unit", str, field_default(Task, "unit"))
    if unit and not unit.isidentifier():
        raise node.error("unit", f"must be a short identifier such as seconds, got {quoted(unit)}")
    if loss in MEAN_LOSSES and label_transform != field_default(Task, "label_transform"):
        raise node.error("label_transform", f"loss {loss} predicts the mean in the label's original units "
                                            f"(a log link): leave label_transform out, got {quoted(label_transform)}")
    head = node.choice("head", HEADS, field_default(Task, "head"))
    after = node.get("after", str, field_default(Task, "after"))
    calibration_weight = node.get("calibration_weight", float, field_default(Task, "calibration_weight"))
    if calibration_weight < 0:
        raise node.error("calibration_weight", f"must be >= 0, got {calibration_weight}")
    if calibration_weight != field_default(Task, "calibration_weight") and head != "aitm":
        raise node.error("calibration_weight", f"only head: aitm has a calibration loss; head is {head}")
    node.finish()
    return Task(name=name, label=label, kind=kind, loss=loss, weight=weight,
                label_transform=label_transform, mask=mask, unit=unit, after=after, head=head,
                calibration_weight=calibration_weight)


def _check_task_links(task_nodes: list[Node], tasks: tuple[Task, ...], columns: Mapping[str, Column]) -> None:
    """Checks what ties a task to others and to its label column: a mean loss's non-negative
    label, and a funnel (``after`` and ``head``): an earlier, unmasked binary task."""
    earlier: dict[str, Task] = {}
    for node, task in zip(task_nodes, tasks):
        if task.loss in MEAN_LOSSES:
            low = columns[task.label].min
            if low is None or low < 0:
                raise node.error("label", f"loss {task.loss} needs a non-negative label: declare column "
                                          f"{quoted(task.label)} with min: 0")
        if task.head in FUNNEL_HEADS and task.after is None:
            raise node.error("after", f"head {task.head} needs the earlier task this one follows (after: <task>)")
        if task.after is not None:
            if task.head not in FUNNEL_HEADS:
                raise node.error("head", f"a task with after: {task.after} needs a funnel head: "
                                         f"{' or '.join(FUNNEL_HEADS)}")
            before = earlier.get(task.after)
            if before is None:
                where = "is this task" if task.after == task.name else "is not a task declared before this one"
                raise node.error("after", f"{quoted(task.after)} {where}")
            if task.kind != "binary" or before.kind != "binary":
                raise node.error("after", f"a funnel joins binary tasks; {task.name} is {task.kind} and "
                                          f"{before.name} is {before.kind}")
            for masked in (task, before):
                if masked.mask is not None:
                    raise node.error("mask" if masked is task else "after",
                                     f"a funnel learns every task of it over all impressions; task "
                                     f"{quoted(masked.name)} is masked by {quoted(masked.mask)}")
        earlier[task.name] = task


def _check_unique(nodes: list[Node], names: list[str], seen: dict[str, str]) -> None:
    for node, name in zip(nodes, names):
        if name in seen:
            raise node.error("name", f"duplicate name {quoted(name)} (first declared at {seen[name]})")
        seen[name] = f"{node.path}.name"


def _units(node: Node, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """Layer widths: at most :data:`MAX_LAYERS` of them, each at most :data:`MAX_UNITS`."""
    return node.int_list(key, default, maximum=MAX_UNITS, max_items=MAX_LAYERS)


def _read_model(node: Node) -> ModelConfig:
    defaults = ModelConfig()
    model = ModelConfig(
        architecture=node.get("architecture", str, defaults.architecture),  # one of mmoe.architectures.ARCHITECTURES, checked there
        num_experts=node.positive_int("num_experts", defaults.num_experts, maximum=MAX_EXPERTS),
        task_experts=node.positive_int("task_experts", defaults.task_experts, maximum=MAX_EXPERTS),
        num_levels=node.positive_int("num_levels", defaults.num_levels, maximum=MAX_LAYERS),
        expert_units=_units(node, "expert_units", defaults.expert_units),
        bottom_units=_units(node, "bottom_units", defaults.bottom_units),
        tower_units=_units(node, "tower_units", defaults.tower_units),
        gate_temperature=node.get("gate_temperature", float, defaults.gate_temperature),
        gate_units=_units(node, "gate_units", defaults.gate_units),
        gate_top_k=node.positive_int("gate_top_k", defaults.gate_top_k, minimum=0, maximum=MAX_EXPERTS),
        gate_type=node.choice("gate_type", GATE_TYPES, defaults.gate_type),
        expert_capacity_factor=node.get("expert_capacity_factor", float, defaults.expert_capacity_factor),
        dselect_gamma=node.get("dselect_gamma", float, defaults.dselect_gamma),
        dselect_entropy_weight=node.get("dselect_entropy_weight", float, defaults.dselect_entropy_weight),
        expert_dropout=node.get("expert_dropout", float, defaults.expert_dropout),
        load_balance_weight=node.get("load_balance_weight", float, defaults.load_balance_weight),
        bias_tower_units=_units(node, "bias_tower_units", defaults.bias_tower_units),
        dropout=node.get("dropout", float, defaults.dropout),
        embedding_l2=node.get("embedding_l2", float, defaults.embedding_l2),
        embedding_l2_per=node.choice("embedding_l2_per", EMBEDDING_L2_PER, defaults.embedding_l2_per),
        cross_layers=node.positive_int("cross_layers", defaults.cross_layers, minimum=0, maximum=MAX_LAYERS),
        cross_projection_dim=node.positive_int("cross_projection_dim", defaults.cross_projection_dim, minimum=0,
                                               maximum=MAX_UNITS),
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
    if model.gate_type == "dselect_k" and model.gate_top_k < 1:
        raise node.error("gate_top_k", "gate_type dselect_k needs gate_top_k >= 1 (its number of selectors)")
    if model.gate_type == "dselect_k" and model.expert_dropout > 0:
        raise node.error("expert_dropout", "applies to softmax gates only, not to gate_type dselect_k")
    if model.dselect_gamma <= 0:
        raise node.error("dselect_gamma", f"must be > 0, got {model.dselect_gamma}")
    for key in ("expert_capacity_factor", "dselect_entropy_weight", "embedding_l2"):
        if getattr(model, key) < 0:
            raise node.error(key, f"must be >= 0, got {getattr(model, key)}")
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


def _read_early_stopping(node: Node, tasks) -> EarlyStopping:
    defaults = EarlyStopping()
    config = EarlyStopping(
        metric=node.choice("metric", tuple(_early_stopping_metrics(tasks)), defaults.metric),
        patience=node.positive_int("patience", defaults.patience, minimum=0, maximum=MAX_EPOCHS),
        min_delta=node.get("min_delta", float, defaults.min_delta),
    )
    if config.min_delta < 0:
        raise node.error("min_delta", f"must be >= 0, got {config.min_delta}")
    node.finish()
    return config


def _read_training(node: Node, tasks) -> TrainingConfig:
    defaults = TrainingConfig()
    training = TrainingConfig(
        batch_size=node.positive_int("batch_size", defaults.batch_size, maximum=MAX_BATCH_SIZE),
        epochs=node.positive_int("epochs", defaults.epochs, maximum=MAX_EPOCHS),
        learning_rate=node.get("learning_rate", float, defaults.learning_rate),
        shuffle_buffer=node.positive_int("shuffle_buffer", defaults.shuffle_buffer, maximum=MAX_SHUFFLE_BUFFER),
        seed=node.positive_int("seed", defaults.seed, minimum=0, maximum=MAX_COUNT),
        loss_weighting=node.choice("loss_weighting", LOSS_WEIGHTINGS, defaults.loss_weighting),
        gradnorm_alpha=node.get("gradnorm_alpha", float, defaults.gradnorm_alpha),
        gradient_surgery=node.choice("gradient_surgery", GRADIENT_SURGERIES, defaults.gradient_surgery),
        checkpoint_every_steps=node.positive_int(
            "checkpoint_every_steps", defaults.checkpoint_every_steps, minimum=0, maximum=MAX_COUNT
        ),
        jit_compile=node.get("jit_compile", bool, defaults.jit_compile),
        steps_per_execution=node.positive_int("steps_per_execution", defaults.steps_per_execution, maximum=MAX_COUNT),
        cache=node.get("cache", bool, defaults.cache),
        lazy_update_min_rows=node.positive_int(
            "lazy_update_min_rows", defaults.lazy_update_min_rows, minimum=0, maximum=MAX_COUNT
        ),
        early_stopping=_read_early_stopping(node.child("early_stopping", required=False), tasks),
        evaluations_per_epoch=node.positive_int(
            "evaluations_per_epoch", defaults.evaluations_per_epoch, maximum=MAX_COUNT
        ),
        expert_stage_epochs=node.positive_int(
            "expert_stage_epochs", defaults.expert_stage_epochs, minimum=0, maximum=MAX_EPOCHS
        ),
        gate_stage_epochs=node.positive_int("gate_stage_epochs", defaults.gate_stage_epochs, minimum=0, maximum=MAX_EPOCHS),
    )
    if training.learning_rate <= 0:
        raise node.error("learning_rate", f"must be > 0, got {training.learning_rate}")
    if not 0 <= training.gradnorm_alpha <= MAX_GRADNORM_ALPHA:
        raise node.error("gradnorm_alpha", f"must be in [0, {MAX_GRADNORM_ALPHA}], got {training.gradnorm_alpha}")
    staged = training.expert_stage_epochs + training.gate_stage_epochs
    if staged > training.epochs:
        raise node.error(
            "gate_stage_epochs" if training.gate_stage_epochs else "expert_stage_epochs",
            f"expert_stage_epochs + gate_stage_epochs ({staged}) exceed epochs ({training.epochs})",
        )
    node.finish()
    return training


def _read_pipeline(node: Node) -> PipelineConfig:
    defaults = PipelineConfig()
    config = PipelineConfig(
        unknown_columns=node.choice("unknown_columns", UNKNOWN_COLUMN_POLICIES, defaults.unknown_columns),
        max_reject_rate=node.get("max_reject_rate", float, defaults.max_reject_rate),
    )
    if not 0.0 <= config.max_reject_rate <= 1.0:
        raise node.error("max_reject_rate", f"must be in [0, 1], got {config.max_reject_rate}")
    node.finish()
    return config


def _read_sources(node: Node, column_types: Mapping[str, str]) -> Sources:
    impression_id = node.get("impression_id", str)
    if impression_id not in column_types:
        raise node.error("impression_id", f"column {quoted(impression_id)} is not declared")
    _check_scalar(node, "impression_id", impression_id, column_types)
    timestamp = node.get("timestamp", str)
    if column_types.get(timestamp) not in ("timestamp", "int"):
        raise node.error("timestamp", f"{quoted(timestamp)} must be a declared timestamp or int column")
    window = node.positive_int("attribution_window_seconds", field_default(Sources, "attribution_window_seconds"),
                               maximum=MAX_COUNT)
    events, labels = [], {}
    event_nodes = node.items("events")
    if not event_nodes:
        raise node.error("events", "name at least one event source")
    for event_node in event_nodes:
        name = event_node.get("name", str)
        if not name.isidentifier():
            raise event_node.error("name", f"must be an identifier, got {quoted(name)}")
        if name in {e.name for e in events}:
            raise event_node.error("name", f"duplicate event source {quoted(name)}")
        label = event_node.get("label", str)
        if column_types.get(label) not in ("int", "float"):
            raise event_node.error("label", f"label column {quoted(label)} must be a declared int or float column")
        if label in labels:
            raise event_node.error("label", f"{quoted(label)} is already derived by source {quoted(labels[label])}")
        labels[label] = name
        aggregate = event_node.choice("aggregate", EVENT_AGGREGATES, field_default(EventSource, "aggregate"))
        value = event_node.get("value", str, field_default(EventSource, "value"))
        if aggregate in ("sum", "max") and value is None:
            raise event_node.error("value", f"aggregate {aggregate} needs the event field to {aggregate}")
        if aggregate in ("flag", "count") and value is not None:
            raise event_node.error("value", f"aggregate {aggregate} takes no value field")
        events.append(EventSource(name=name, label=label, aggregate=aggregate, value=value,
                                  timestamp=event_node.get("timestamp", str, field_default(EventSource, "timestamp"))))
        event_node.finish()
    node.finish()
    return Sources(impression_id=impression_id, timestamp=timestamp, attribution_window_seconds=window,
                   events=tuple(events))


def _read_tables(root: Node) -> tuple[list[Node], list[dict], dict[str, tuple[str, dict]]]:
    """The ``tables:`` section's items as plain fields, before the features are read.

    Returns:
        ``(nodes, tables, columns)``: each table's node, its fields (``columns`` as
        :func:`_read_column` dicts; ``key`` not yet checked against the impressions' columns,
        see :func:`_check_tables`), and table column name -> (its key path, its dict).
    """
    nodes, tables, columns = root.items("tables"), [], {}
    for node in nodes:
        name = node.get("name", str)
        if not name.isidentifier():
            raise node.error("name", f"must be an identifier, got {quoted(name)}")
        if name in {t["name"] for t in tables}:
            raise node.error("name", f"duplicate table {quoted(name)}")
        key = node.get("key", str)
        missing_key = node.choice("missing_key", MISSING_KEY_RULES, field_default(Table, "missing_key"))
        column_nodes = node.items("columns")
        if not column_nodes:
            raise node.error("columns", "name at least one column the table holds (each a feature)")
        table_columns = []
        for column_node in column_nodes:
            column = _read_column(column_node)
            column_node.finish()
            where = f"{column_node.path}.name"
            if column["name"] == key:
                raise column_node.error("name", f"{quoted(key)} is the table's key: list only the columns it looks up")
            if column["name"] in columns:
                raise column_node.error("name", f"duplicate column {quoted(column['name'])} "
                                                f"(first declared at {columns[column['name']][0]})")
            if missing_key == "default" and column["list"] is None and column["required"]:
                raise column_node.error(
                    "default", f"missing_key: default gives a row whose key is not in table {quoted(name)} each "
                               f"column's default: set required: false and a default (or missing_key: reject)")
            columns[column["name"]] = (where, column)
            table_columns.append(column)
        tables.append(dict(name=name, key=key, columns=table_columns,
                           input=node.get("input", str, field_default(Table, "input")), missing_key=missing_key,
                           join=node.choice("join", TABLE_JOINS, field_default(Table, "join"))))
        node.finish()
    return nodes, tables, columns


def _check_tables(nodes: list[Node], tables: list[dict], features: tuple[Feature, ...],
                  own_columns: Mapping[str, str]) -> tuple[Table, ...]:
    """Checks each table's key (an int or string impression column, one value per row) and that
    every table column is a feature; returns the :class:`Table` items."""
    feature_names = {f.name for f in features}
    out = []
    for node, table in zip(nodes, tables):
        key = table["key"]
        if key not in own_columns:
            raise node.error("key", f"column {quoted(key)} is not declared under features or columns")
        _check_scalar(node, "key", key, own_columns)
        if own_columns[key] not in ("int", "string"):
            raise node.error("key", f"a table key is an int or string column; {quoted(key)} is {own_columns[key]}")
        for i, column in enumerate(table["columns"]):
            if column["name"] not in feature_names:
                raise node.error(f"columns[{i}].name", f"{quoted(column['name'])} is not a feature: declare it under "
                                                      f"features by its name (and transform), or remove it")
        out.append(Table(**{**table, "columns": tuple(Column(**c) for c in table["columns"])}))
    return tuple(out)


def _read_ranking(node: Node, column_types: Mapping[str, str], task_names: set[str]) -> Ranking:
    group_by = node.get("group_by", str, field_default(Ranking, "group_by"))
    if group_by is not None and group_by not in column_types:
        raise node.error("group_by", f"column {quoted(group_by)} is not declared")
    _check_scalar(node, "group_by", group_by, column_types)
    score_kind = node.choice("kind", SCORE_KINDS, field_default(Ranking, "kind"))
    weights_node = node.child("weights")
    weights = {}
    for task_name in list(weights_node.data):
        if task_name not in task_names:
            raise weights_node.error(task_name, f"unknown task {quoted(task_name)}")
        weights[task_name] = weights_node.get(task_name, float)
    if not weights:
        raise node.error("weights", "name at least one task's weight")
    user_key = node.get("user_key", str, field_default(Ranking, "user_key"))
    if user_key is not None and user_key not in column_types:
        raise node.error("user_key", f"column {quoted(user_key)} is not declared")
    _check_scalar(node, "user_key", user_key, column_types)
    node.finish()
    return Ranking(group_by=group_by, kind=score_kind, weights=weights, user_key=user_key)


def _read_split(node: Node, column_types: Mapping[str, str]) -> Split:
    method = node.choice("method", SPLIT_METHODS, field_default(Split, "method"))
    key = node.get("key", str)
    if key not in column_types:
        raise node.error("key", f"column {quoted(key)} is not declared")
    _check_scalar(node, "key", key, column_types)
    eval_fraction = node.get("eval_fraction", float, field_default(Split, "eval_fraction"))
    if not 0.0 < eval_fraction < 1.0:
        raise node.error("eval_fraction", f"must be in (0, 1), got {eval_fraction}")
    cutoff = node.get("cutoff", int, field_default(Split, "cutoff"))
    if method == "timestamp":
        if column_types[key] not in ("timestamp", "int"):
            raise node.error("key", f"a timestamp split needs an int/timestamp column, {quoted(key)} is {column_types[key]}")
        if cutoff is None:
            raise node.error("cutoff", "a timestamp split needs a cutoff")
    split = Split(method=method, key=key, eval_fraction=eval_fraction, cutoff=cutoff,
                  seed=node.positive_int("seed", field_default(Split, "seed"), minimum=0, maximum=MAX_COUNT))
    node.finish()
    return split


def spec_from_dict(data: Mapping, source: str | None = None) -> FeatureSpec:
    """Validates plain data (parsed YAML or spec.json) and returns a :class:`FeatureSpec`.

    Args:
        data: mapping. The spec as plain data, e.g. ``yaml.safe_load`` of a spec file.
        source: str or None. The file it came from, named in error messages.

    Raises:
        SpecError: naming the key path of the first problem found.
    """
    root = Node(data, "", source)
    name = root.get("name", str)
    description = root.get("description", str, field_default(FeatureSpec, "description"))

    feature_nodes = root.items("features")
    if not feature_nodes:
        raise root.error("features", "at least one feature is required")
    table_nodes, table_fields, table_columns = _read_tables(root)
    features = tuple(_read_feature(n, table_columns) for n in feature_nodes)
    column_nodes = root.items("columns")
    columns = []
    for node in column_nodes:
        columns.append(Column(**_read_column(node)))
        node.finish()
    columns = tuple(columns)
    seen: dict[str, str] = {}
    _check_unique(feature_nodes, [f.name for f in features], seen)
    _check_unique(column_nodes, [c.name for c in columns], seen)
    column_types = {c.name: c.kind for c in features + columns}  # "int list" for a list: no key or label check accepts it
    if not any(f.role == "feature" for f in features):
        raise root.error("features", "at least one feature must have role: feature")
    tables = _check_tables(table_nodes, table_fields, features,
                           {name: kind for name, kind in column_types.items() if name not in table_columns})

    task_nodes = root.items("tasks")
    if not task_nodes:
        raise root.error("tasks", "at least one task is required")
    tasks = tuple(_read_task(n, column_types) for n in task_nodes)
    task_seen: dict[str, str] = {}
    _check_unique(task_nodes, [t.name for t in tasks], task_seen)
    for node, task in zip(task_nodes, tasks):
        if task.served_output in column_types:  # responses and metrics hold columns and outputs by name
            raise node.error("name", f"the task's served output {quoted(task.served_output)} would have the name of "
                                     f"the column {quoted(task.served_output)}: rename the task")
    _check_task_links(task_nodes, tasks, {c.name: c for c in features + columns})
    _check_history_links(feature_nodes, features, {c.name: c for c in features + columns})
    _check_list_targets(feature_nodes, features)
    label_names = {t.label for t in tasks}
    for node, feature in zip(feature_nodes, features):
        if feature.name in label_names:
            raise node.error("name", f"{quoted(feature.name)} is a task label and cannot be a model feature")

    ranking = _read_ranking(root.child("ranking"), column_types, set(task_seen))
    split = _read_split(root.child("split"), column_types)
    model = _read_model(root.child("model", required=False))
    training = _read_training(root.child("training", required=False), tasks)
    pipeline = _read_pipeline(root.child("pipeline", required=False))
    sources = _read_sources(root.child("sources"), column_types) if root.data.get("sources") is not None else None
    root.used.add("sources")
    root.finish()
    return FeatureSpec(name=name, description=description, features=features, columns=columns,
                       tasks=tasks, ranking=ranking, split=split, model=model, training=training,
                       pipeline=pipeline, sources=sources, tables=tables)


def load_spec(path: str) -> FeatureSpec:
    """Loads and validates a YAML (or JSON) spec file.

    Args:
        path: str. Local path of a ``.yaml``/``.yml``/``.json`` spec.

    Raises:
        SpecError: with the file name and the key path of the problem, or what makes the file
            unreadable (:func:`feature_specs.spec_file.read_spec_data`: size, encoding, YAML).
    """
    data = read_spec_data(path)
    return spec_from_dict(data if data is not None else {}, source=path)


def bundled_spec_path(name: str) -> str:
    """Path of a spec shipped in this package, e.g. ``bundled_spec_path('clicklog')``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.yaml")
