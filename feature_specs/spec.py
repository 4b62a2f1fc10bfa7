"""The feature spec's data model: the tables of allowed values and the frozen dataclasses.

A spec is one YAML file that declares a data set's raw columns, how each feature is transformed,
the tasks and their labels, the ranking score, the split, and the model and training settings.
Every stage (pipeline, model, server) reads features, labels and tasks from it and from nowhere
else. Every default of a spec key is written once, on its dataclass field here; the reader
(:mod:`feature_specs.spec_reader`), ``mmoe spec infer`` and the guide's tables take it from there
(:func:`field_default`).

Reading a spec (:func:`~feature_specs.spec_reader.load_spec`, ``spec_from_dict``,
``bundled_spec_path``) lives in :mod:`feature_specs.spec_reader`, which imports this module and
never the other way round; :class:`SpecError` (from :mod:`feature_specs.spec_nodes`) is
re-exported here. This module imports neither TensorFlow, Keras nor Beam.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from feature_specs.spec_nodes import SpecError  # noqa: F401  (re-exported: every stage catches it)

DTYPES = ("string", "int", "float", "timestamp")
TRANSFORMS = {
    "string": ("vocabulary", "hashing"),
    "int": ("vocabulary", "hashing", "zscore", "log1p", "quantile"),
    "float": ("zscore", "log1p", "quantile"),
}
NUMERIC_TRANSFORMS = ("zscore", "log1p", "quantile")
# List-valued columns (a ``list:`` block on a column whose ``type`` is the elements' type).
LIST_DTYPES = ("string", "int")
LIST_TRANSFORMS = ("vocabulary", "hashing")
POOLED_LIST_POOLINGS = ("mean", "sum")  # PooledEmbedding's
LIST_POOLINGS = POOLED_LIST_POOLINGS + ("attention",)  # "attention": TargetAttentionEmbedding (DIN)
LIST_TOO_LONG = ("truncate", "reject")
# The element that pads a list to a fixed length in tensors (``predict_raw`` inputs, parsed
# batches); never a valid element: string elements are non-empty, int elements are >= 0.
LIST_PADDING = {"string": "", "int": -1}
ROLES = ("feature", "bias")
TASK_KINDS = ("binary", "regression")
# The losses a task of each kind may name, its default first; implemented in mmoe/losses.py.
LOSSES = {"binary": ("binary_crossentropy",), "regression": ("mse", "huber", "ziln", "tweedie", "poisson")}
# Regression losses whose prediction is the conditional mean of a non-negative label in its original
# units (a log link): they take the label untransformed and need a column with min >= 0.
MEAN_LOSSES = ("ziln", "tweedie", "poisson")
# Task heads: ``tower`` (one tower per task) or a funnel head over an earlier task (``after``):
# ``esmm`` (Ma et al., SIGIR 2018) or ``aitm`` (Xi et al., KDD 2021); built in mmoe/model.py.
HEADS = ("tower", "esmm", "aitm")
FUNNEL_HEADS = ("esmm", "aitm")
LABEL_TRANSFORMS = ("none", "log1p")
SCORE_KINDS = ("weighted_sum", "product")
SPLIT_METHODS = ("hash", "timestamp")

# Upper bounds of the spec's integer keys, each written once here and checked by the reader at its
# key path (``mmoe train --epochs/--batch-size`` apply the same two). Far above any model this
# project trains, low enough that a slip (three zeros too many, ``1e23``) is refused before a stage
# allocates anything.
MAX_BATCH_SIZE = 1 << 20  # training.batch_size
MAX_EPOCHS = 10_000  # training.epochs and early_stopping.patience
MAX_GRADNORM_ALPHA = 10.0  # training.gradnorm_alpha (the paper uses 0.12 to 3)
MAX_EXPERTS = 1_024  # model.num_experts, task_experts, gate_top_k
MAX_LAYERS = 64  # model.num_levels, and the length of every *_units list
MAX_UNITS = 1 << 16  # each width in model.*_units
MAX_EMBEDDING_DIM = 4_096  # features[].embedding_dim
MAX_TABLE_ROWS = 1 << 26  # features[].top_k, num_bins, num_oov: rows of one embedding table
MAX_QUANTILE_BUCKETS = 10_000  # features[].num_buckets of a quantile feature
MAX_SHUFFLE_BUFFER = 1 << 24  # training.shuffle_buffer: examples held in memory
MAX_LIST_LENGTH = 4_096  # features[].list.max_length: elements kept per row
MAX_COUNT = 2**31 - 1  # counts, step numbers, seconds and seeds: the int32 TensorFlow's counters take


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (its factory called, if it has one).

    Args:
        cls: a dataclass type, e.g. :class:`Feature`.
        name: str. One of its field names, e.g. ``"embedding_dim"``.

    Returns:
        The field's default value, or ``dataclasses.MISSING`` for a field without one (a spec key
        that is required).
    """
    for item in dataclasses.fields(cls):
        if item.name == name:
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            return item.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


@dataclass(frozen=True)
class ListSpec:
    """How a list-valued column is read and pooled (the column's ``list:`` block).

    The column's ``type`` (``string`` or ``int``) is the type of each element. A row's value is a
    JSON array, a Parquet list, a tf.Example feature holding any number of values, or text split
    at ``separator`` (CSV, and text in JSONL); each element is checked like a scalar of the
    column's type (``min``/``max`` apply to every element), string elements must not be empty
    and int elements must be >= 0 (:data:`LIST_PADDING` pads with -1). A missing value (absent,
    null, blank text, an Example feature without values) is the empty list, which pools to zeros.

    Args:
        separator: str. Splits text values into elements, each stripped of surrounding spaces.
        max_length: int. The most elements a row keeps; tensors hold lists padded to it.
        too_long: str. A row with more elements: ``truncate`` (keep the first ``max_length``)
            or ``reject`` (the row is rejected as ``too_long``, naming the field).
        pooling: str. How a feature's element embeddings become one vector: ``mean`` or
            ``sum`` over the row's elements (padding masked out), or ``attention``: each
            element weighed against the embedding of the ``target`` feature (the candidate), as
            Deep Interest Network's activation unit does (Zhou et al., KDD 2018).
        target: str or None. The scalar categorical feature an ``attention`` list attends to
            (e.g. the candidate's ``item_category`` for a history of clicked categories).
    """

    separator: str = ","
    max_length: int = 16
    too_long: str = "truncate"
    pooling: str = "mean"
    target: str | None = None


@dataclass(frozen=True)
class HistorySpec:
    """A behaviour history: a list feature the pipeline derives from the log itself (the
    feature's ``history:`` block), never read from the input.

    For each impression it holds the ``item`` values of the same ``user``'s impressions whose
    ``positive`` column is > 0 and whose ``time`` is **strictly earlier**, the latest
    ``list.max_length`` of them, **newest first** (so a longer list a client sends is cut, like
    any list, to its first ``max_length``: the newest). Impressions that share a timestamp never see each
    other, so no element comes from the impression's own moment or later. Only rows that passed
    validation count. At serving, the client sends the history like any list feature.

    Args:
        user: str. The column that groups impressions (e.g. ``user_id``); one value per row.
        item: str. The column whose values the history holds (e.g. ``video_id``); its type is
            the feature's element type.
        time: str. The impressions' time column (``timestamp`` or ``int``).
        positive: str. A numeric column (usually a task's label, e.g. ``click``): an impression
            enters later histories where it is > 0.
    """

    user: str
    item: str
    time: str
    positive: str


@dataclass(frozen=True)
class Column:
    """A raw column with the checks every row must pass.

    Args:
        name: str. Column name in the raw log.
        dtype: str. One of ``string``, ``int``, ``float``, ``timestamp`` (int seconds since epoch);
            for a list column, the type of its elements (``string`` or ``int``).
        required: bool. A row without a value is rejected.
        default: value used where ``required`` is False and the value is missing.
        min: optional lower bound (inclusive) for numeric columns (each element of an int list).
        max: optional upper bound (inclusive) for numeric columns (each element of an int list).
        list: ListSpec or None. Set for a list-valued column: each row holds a variable-length
            list of ``dtype`` elements (tf.Example bytes_list / int64_list of any length).
    """

    name: str
    dtype: str
    required: bool = True
    default: Any = None
    min: float | None = None
    max: float | None = None
    list: ListSpec | None = None

    @property
    def is_list(self) -> bool:
        return self.list is not None

    @property
    def is_numeric(self) -> bool:
        """A scalar number (int, float, timestamp); list columns are not."""
        return self.list is None and self.dtype in ("int", "float", "timestamp")

    @property
    def kind(self) -> str:
        """``dtype``, or ``"<dtype> list"`` for a list column (as error messages name it)."""
        return self.dtype if self.list is None else f"{self.dtype} list"


@dataclass(frozen=True, kw_only=True)
class Feature(Column):
    """A column the model reads, with its transform.

    Args:
        transform: str, required (keyword-only, like every key below). ``vocabulary``
            (StringLookup/IntegerLookup from the train split's top values), ``hashing``,
            ``zscore``, ``log1p`` (log1p then z-score) or ``quantile`` (bucketized at the train
            split's approximate quantiles, then embedded). A list feature (``list`` set) takes
            ``vocabulary`` or ``hashing`` over its elements, then a pooled embedding.
        top_k: int. Largest vocabulary size (vocabulary).
        min_count: int. Values seen fewer times in the train split are out of vocabulary.
        num_oov: int. Out-of-vocabulary buckets.
        oov_dropout: float in [0, 1). Scalar vocabulary features: in training, this share of the
            rows is looked up as out of vocabulary (ID dropout), so the OOV row that new values
            get at serving is trained on ordinary rows (``mmoe.layers.oov_dropout``).
        num_bins: int. Hash buckets (hashing).
        num_buckets: int. Quantile buckets (quantile).
        embedding_dim: int. Embedding width for categorical and bucketized features.
        role: str. ``feature`` (model input) or ``bias`` (fed to a shallow tower that adds to the
            binary tasks' logits in training; at serving the feature is fixed to ``serving_value``).
        serving_value: the value a bias feature takes at serving (e.g. position 1, so predicted
            probabilities mean "if shown at the top"); required for role ``bias``.
        history: HistorySpec or None. Set for a list feature the pipeline derives from the log
            (a behaviour history); its column is then not read from the input.
    """

    transform: str
    top_k: int = 10000
    min_count: int = 1
    num_oov: int = 1
    oov_dropout: float = 0.0
    num_bins: int = 0
    num_buckets: int = 0
    embedding_dim: int = 8
    role: str = "feature"
    serving_value: Any = None
    history: HistorySpec | None = None

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
        after: optional name of an earlier binary task this one can only follow (a funnel, e.g.
            conversion after click): this task's label is 1 only where that task's label is 1,
            and it is learned over every impression by a funnel ``head``.
        head: str. ``tower``; or, with ``after``, ``esmm`` (the task's probability is the
            earlier task's times a conditional tower's: pCTCVR = pCTR x pCVR) or ``aitm``
            (an attention transfer from the earlier task's representation, with a calibration
            loss keeping this task's probability below the earlier one's).
        calibration_weight: float. Weight of AITM's calibration loss,
            ``max(p_task - p_after, 0)`` per impression (alpha in Xi et al.); ``aitm`` only.
    """

    name: str
    label: str
    kind: str
    loss: str
    weight: float = 1.0
    label_transform: str = "none"
    mask: str | None = None
    unit: str = ""
    after: str | None = None
    head: str = "tower"
    calibration_weight: float = 0.6

    @property
    def served_output(self) -> str:
        """Name of the task's served output: ``<task>_probability`` for binary, ``<task>`` otherwise."""
        return f"{self.name}_probability" if self.kind == "binary" else self.name


@dataclass(frozen=True, kw_only=True)
class Ranking:
    """How per-task outputs combine into one ranking score.

    Args:
        group_by: str or None (keyword-only, like every key). Request id column: candidates of one request are ranked together
            (per-request ranking metrics need it); None for data without requests.
        kind: str. ``product``: prod_t output_t ** weight_t (click probability times engagement
            seconds is expected engagement); ``weighted_sum``: sum_t weight_t * output_t.
        weights: mapping task name -> weight. Outputs are in original units (probability, seconds).
        user_key: str or None. The column naming the user: evaluation adds each binary task's
            per-user AUC (gAUC: users with both classes, weighted by their impressions). A key
            of its own, not ``group_by``: a request holds one page of one user, mostly without
            a positive, while users rank many items over many requests.
    """

    group_by: str | None = None
    kind: str = "weighted_sum"
    weights: Mapping[str, float]
    user_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class Split:
    """Train/eval split.

    Args:
        method: str. ``hash`` (seeded hash of ``key``) or ``timestamp`` (rows at or after
            ``cutoff`` go to eval).
        key: str, required (keyword-only, like every key). Column hashed (hash) or compared
            (timestamp).
        eval_fraction: float. Share of keys in eval (hash).
        cutoff: int. Timestamp cut (timestamp).
        seed: int. Salt of the hash.
    """

    method: str = "hash"
    key: str
    eval_fraction: float = 0.2
    cutoff: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and hyper-parameters of the multi-task model.

    Args:
        architecture: str. A name of ``mmoe.architectures.BACKBONES``, where each architecture's
            builder and its one-line description live (mmoe, omoe, shared_bottom, ...); checked
            there, by key path, when a model is built or the CLI loads the spec.
        num_experts: int. Shared experts (mmoe, omoe, cgc, ple, stem).
        task_experts: int. Experts owned by each task (cgc, ple, stem).
        num_levels: int. Extraction levels (ple).
        expert_units: list of int. Each expert's MLP widths.
        bottom_units: list of int. The bottom MLP of shared_bottom and single_task.
        tower_units: list of int. Each task tower's hidden widths (a final unit is added).
        gate_temperature: float. Softmax temperature of the gates.
        gate_units: list of int. Hidden widths of an MLP in front of each gate's softmax.
        gate_top_k: int. Keep only the k largest gate weights per example (renormalized); 0 = all.
            With softmax gates, mmoe and omoe send each example only to its k experts (sparse
            dispatch, ``mmoe.layers.dispatch``), in training and in the SavedModel. For
            ``gate_type: dselect_k``, the number of selectors k.
        gate_type: str. ``softmax`` (one softmax per gate) or ``dselect_k`` (Hazimeh et al. 2021:
            k smooth-step binary selectors, trained dense; at inference each example keeps its k
            largest weights, exact once the selection is hard, and mmoe/omoe dispatch it).
        expert_capacity_factor: float. Under sparse dispatch in training, each expert takes at most
            ``ceil(factor * batch * choices / experts)`` rows of a batch (GShard/Switch capacity);
            a row past it is dropped from that expert and its other chosen experts share its
            weight. 0: no limit (nothing dropped, but XLA cannot compile the data-sized buffers).
            Inference never drops.
        dselect_gamma: float. Width of the DSelect-k smooth-step's non-constant part.
        dselect_entropy_weight: float. Weight of the DSelect-k selectors' entropy in the loss,
            which makes the selection hard.
        expert_dropout: float. In training, drop each expert from a gate's mixture with this
            probability (weights renormalized), against gate polarization.
        load_balance_weight: float. Weight of the auxiliary loss on expert importance
            (``E * sum_e mean_batch(g_e)^2``, 1 when balanced); 0 disables it.
        bias_tower_units: list of int. Hidden widths of the shallow bias tower.
        dropout: float. Dropout in towers.
        embedding_l2: float. L2 penalty on the embedding rows each batch looks up, every table:
            ``embedding_l2 * sum of their squares / batch size`` (a list's elements each count).
            Only looked-up rows get its gradient, so embedding updates stay sparse, and a row is
            penalized each time it is used. 0 disables it.
        embedding_l2_per: str. What ``embedding_l2`` counts: ``lookup`` (every use of a row, the
            default) or ``row`` (each distinct row a batch looks up once: a value used k times in
            the batch adds ``1/k`` per use, so frequent values are penalized far less, relative
            to their data, than rare ones).
        cross_layers: int. DCN-v2 cross layers (Wang et al., WWW 2021; ``keras_rs.layers.FeatureCross``)
            on the encoded features, in front of the backbone: ``x_{l+1} = x_0 * (W x_l + b) + x_l``,
            explicit feature crosses of degree ``l + 1`` that every task's experts then read. In
            shared_bottom and single_task too; single_task and stem cross each task's own
            embeddings with layers of their own. 0 disables them.
        cross_projection_dim: int. Rank of each cross layer's ``W`` (``U V^T``, DCN-v2's low-rank
            mixture's single expert); 0: full rank (``width x width``).
        fused_experts: bool. Keep each expert layer's kernels stacked in one tensor (default):
            one wide matmul for one-layer experts, per-expert matmul chains on slices of the
            stacked kernels for deeper ones (``mmoe.layers.experts``), instead of a loop of
            per-expert Dense layers; same function, different speed.
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
    gate_type: str = "softmax"
    expert_capacity_factor: float = 1.25
    dselect_gamma: float = 1.0
    dselect_entropy_weight: float = 0.01
    expert_dropout: float = 0.0
    load_balance_weight: float = 0.0
    bias_tower_units: tuple[int, ...] = ()
    dropout: float = 0.0
    embedding_l2: float = 0.0
    embedding_l2_per: str = "lookup"
    cross_layers: int = 0
    cross_projection_dim: int = 0
    fused_experts: bool = True


GATE_TYPES = ("softmax", "dselect_k")  # model.gate_type
EMBEDDING_L2_PER = ("lookup", "row")  # model.embedding_l2_per
FIXED_WEIGHTS, UNCERTAINTY, GRADNORM = "fixed", "uncertainty", "gradnorm"
LOSS_WEIGHTINGS = (FIXED_WEIGHTS, UNCERTAINTY, GRADNORM)  # training.loss_weighting
NO_SURGERY, PCGRAD = "none", "pcgrad"
GRADIENT_SURGERIES = (NO_SURGERY, PCGRAD)  # training.gradient_surgery


@dataclass(frozen=True)
class EarlyStopping:
    """Which eval metric picks the best epoch, and when training stops (``training.early_stopping``).

    Args:
        metric: str. ``val_loss`` (the weighted total), ``val_<task>_loss`` or, for binary
            tasks, ``val_<task>_auc``.
        patience: int. Stop after this many epochs without improvement; 0 never stops early
            (the best epoch is still the one kept).
        min_delta: float. Smallest change that counts as an improvement.
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
        loss_weighting: str. ``fixed`` (each task's ``weight``), ``uncertainty`` (Kendall et
            al., CVPR 2018: a learned log-variance per task, scaled by the task's ``weight``) or
            ``gradnorm`` (Chen et al., ICML 2018: learned task weights, summing to the number of
            tasks, that pull each task's gradient norm on the shared variables towards the mean
            times its inverse training rate ** ``gradnorm_alpha``; scaled by the task's
            ``weight``; ``mmoe.gradnorm``).
        gradnorm_alpha: float >= 0. GradNorm's ``alpha``: how much more gradient a task whose loss
            fell least gets (0: equal gradient norms). Read with ``loss_weighting: gradnorm``.
        gradient_surgery: str. ``none`` (the gradient of the weighted total) or ``pcgrad`` (Yu et
            al., NeurIPS 2020: where two tasks' gradients conflict, a negative dot product, each
            loses its component along the other's before they are summed; ``mmoe.gradient_surgery``).
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
        evaluations_per_epoch: int. Eval passes per epoch, evenly spaced in steps (the last at
            the epoch's end); each may keep the model as the best by ``early_stopping.metric``,
            so the kept model can come from inside an epoch. Patience still counts epochs.
        expert_stage_epochs: int. Staged training, stage 1: the first this many epochs train
            everything but the gates, which stay at their initialization (experts first).
        gate_stage_epochs: int. Stage 2: the next this many epochs train the gates alone; the
            remaining epochs train everything jointly. Both 0 (the default): joint from the start.
    """

    batch_size: int = 512
    epochs: int = 3
    learning_rate: float = 0.002
    shuffle_buffer: int = 10000
    seed: int = 42
    loss_weighting: str = FIXED_WEIGHTS
    gradnorm_alpha: float = 1.5
    gradient_surgery: str = NO_SURGERY
    checkpoint_every_steps: int = 200
    jit_compile: bool = False
    steps_per_execution: int = 8
    cache: bool = False
    lazy_update_min_rows: int = 10_000
    early_stopping: EarlyStopping = EarlyStopping()
    evaluations_per_epoch: int = 4
    expert_stage_epochs: int = 0
    gate_stage_epochs: int = 0


UNKNOWN_COLUMN_POLICIES = ("ignore", "reject")


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the batch preprocessing pipeline (the spec's ``pipeline:`` section).

    Args:
        unknown_columns: str. What to do with input columns the spec does not declare: ``ignore``
            (dropped from the output, counted per column in the report) or ``reject`` (the row is
            rejected with reason ``unknown_column``).
        max_reject_rate: float in [0, 1]. The run fails (after writing report.json) when more than
            this share of the input rows is rejected.
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
        timestamp: str. The event's time field (seconds since the epoch).
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


TABLE_JOINS = ("auto", "side_input", "grouped")
MISSING_KEY_RULES = ("default", "reject")


@dataclass(frozen=True)
class Table:
    """A side table joined to the impressions by key (one item of the spec's ``tables:``).

    The table's rows carry the key column (named ``key``, typed as the impressions' column of
    that name) and ``columns``; each of ``columns`` is a model feature declared under
    ``features:`` by its name alone (the type and checks are the table's), looked up by key: in
    the pipeline by a Beam join (:mod:`pipelines.side_tables`), at serving from the snapshot of the
    table exported inside the SavedModel.

    Args:
        name: str. The table's name; ``--table NAME=PATTERN`` gives or overrides its input.
        key: str. The declared impression column (int or string, one value per row) it joins on.
        columns: the table's columns, each a :class:`Column` with its checks.
        input: str or None. File pattern of the table (CSV, Parquet, JSONL, as the main input);
            None: given per run with ``--table``.
        missing_key: str. An impression whose key is not in the table: ``default`` (each column
            takes its ``default``, so every scalar column needs ``required: false`` and one; a
            list column is empty) or ``reject`` (the row is rejected as ``missing_key``).
        join: str. ``side_input`` (the table is held whole by every worker), ``grouped``
            (a CoGroupByKey on the key, for tables too large for memory) or ``auto``
            (``side_input`` when the table's files are small, see
            :data:`pipelines.side_tables.SIDE_INPUT_MAX_BYTES`).
    """

    name: str
    key: str
    columns: tuple[Column, ...]
    input: str | None = None
    missing_key: str = "default"
    join: str = "auto"


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
    tables: tuple[Table, ...] = ()

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """Every raw column a row must carry, features first, in declaration order."""
        return self.features + self.columns

    @property
    def logged_columns(self) -> tuple[Column, ...]:
        """The columns read from the input: :attr:`all_columns` without the derived histories."""
        return tuple(f for f in self.features if f.history is None) + self.columns

    @property
    def history_features(self) -> tuple[Feature, ...]:
        """The features the pipeline derives from the log (a ``history:`` block)."""
        return tuple(f for f in self.features if f.history is not None)

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

    def table_of(self, name: str) -> Table | None:
        """The side table that holds column ``name``, or None for a column of the impressions."""
        for table in self.tables:
            if any(c.name == name for c in table.columns):
                return table
        return None

    @property
    def table_column_names(self) -> frozenset[str]:
        """Names of every column looked up from a side table (never read from the impressions)."""
        return frozenset(c.name for t in self.tables for c in t.columns)

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
        looked_up = self.table_column_names  # a table feature's type and checks are its table's
        column_keys = {f.name for f in dataclasses.fields(Column)} | {"type"}
        data["features"] = [{k: v for k, v in f.items() if k == "name" or k not in column_keys}
                            if f["name"] in looked_up else f for f in data["features"]]
        for table in data.get("tables", []):
            table["columns"] = [column(c) for c in table["columns"]]
        data["ranking"]["weights"] = dict(self.ranking.weights)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

