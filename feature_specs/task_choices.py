"""Decides each task of a proposed spec from its label column: kind, loss, label transform, mask,
and the label column's bounds.

A non-negative, right-skewed regression label (dwell time, watch time, revenue: many zeros or a
heavy tail) gets ``loss: ziln``, whose prediction is the conditional mean in the label's units;
MSE on ``log1p`` would predict about the geometric mean, far below the mean for such labels, and
the ranking score multiplies the prediction by a probability as an expected value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feature_specs.column_choices import SKEW_LOG1P
from feature_specs.profile import ColumnProfile, moments
from feature_specs.sample import InferError
from feature_specs.spec import Task, field_default

MEAN_LOSS = "ziln"  # the loss proposed for non-negative right-skewed regression labels
MIN_MASKED_WEIGHT = 0.01  # masked_weight's floor: a label observed on fewer rows still counts
from feature_specs.spec_reader import default_loss


@dataclass(frozen=True)
class LabelPlan:
    """A task as inferred.

    Args:
        task: str. The task's name.
        column: str. Its label column.
        kind: str. ``binary`` or ``regression``.
        loss: str. The task's loss.
        label_transform: str. ``none`` or ``log1p`` (regression).
        mask: str or None. The first (click-like) label, when this one is observed only where it is 1.
        weight: float. The loss weight: a masked task's is its observed share of the rows
            (:func:`masked_weight`), every other task's the field default.
        reason: str. The explanation written as the YAML comment.
    """

    task: str
    column: str
    kind: str
    loss: str
    label_transform: str = field_default(Task, "label_transform")
    mask: str | None = field_default(Task, "mask")
    weight: float = field_default(Task, "weight")
    reason: str = ""


def masked_weight(click: ColumnProfile) -> tuple[float, float]:
    """``(weight, share)`` of a task masked by ``click``: ``share`` is the sample's rows where
    ``click`` is 1; the weight is that share (two decimals, at least ``MIN_MASKED_WEIGHT``).

    A masked task's loss is averaged over its observed rows only, so at weight w each of them
    weighs ``w / share`` rows of the first task; at the share, one. At 1.0 a dwell time observed
    on 1 row in 9 weighs 9 click rows: on the default clicklog (share 0.11) 1.0 cost 0.0137 click
    AUC and 0.0113 NDCG@10 against the share, and engagement was no better (RMSE +0.9 s, Spearman
    -0.009); benchmarks/run_seeds.py, 8 seeds, README "The engagement weight of the default run".
    """
    numbers = click.numbers[np.isfinite(click.numbers)]
    share = float(np.mean(numbers == 1)) if numbers.size else 0.0
    return max(MIN_MASKED_WEIGHT, round(share, 2)), share


def only_where(label: ColumnProfile, click: ColumnProfile) -> bool:
    """The label is non-zero (or missing) only in rows where ``click`` is 1, and non-zero somewhere."""
    unclicked = click.numbers != 1
    outside = np.nan_to_num(label.numbers[unclicked], nan=0.0)
    return bool(np.all(outside == 0) and np.any(np.nan_to_num(label.numbers, nan=0.0) != 0))


def plan_label(task: str, column: str, profile: ColumnProfile, first: LabelPlan | None,
                first_profile: ColumnProfile | None) -> LabelPlan:
    """Infers one task from its label column.

    The first label is the click-like task when it is 0/1; when it is not, the spec is
    regression only (a ratings log with no 0/1 outcome) and every later label must be a
    regression too.

    Args:
        task: str. The task's name.
        column: str. Its label column.
        profile: ColumnProfile. The label column's profile.
        first: LabelPlan or None. The first task, for every label after it.
        first_profile: ColumnProfile or None. The first label's profile (masks and funnels
            are read against it); None for the first label and when the first is a regression.

    Raises:
        InferError: text labels, two values that are not 0/1, or a 0/1 label after a first label
            that is not 0/1.
    """
    if profile.dtype not in ("int", "float"):
        held = (f"e.g. {next(iter(profile.counts))!r}" if profile.counts
                else f"{profile.kinds.most_common(1)[0][0]} values" if profile.kinds else "no values")
        raise InferError(
            f"label column {column!r} of task {task!r} does not hold numbers ({held}); "
            "labels must be 0/1 for binary tasks or numbers for regression")
    values = profile.valid_numbers
    distinct = sorted(set(values.tolist()))
    shown = ", ".join(f"{v:g}" for v in distinct[:6]) + (", ..." if len(distinct) > 6 else "")
    if set(distinct) <= {0.0, 1.0}:
        if first is not None and first.kind != "binary":
            raise InferError(
                f"label column {column!r} of task {task!r} is 0/1 but follows the regression task {first.task!r}: "
                "give the 0/1 (click-like) label first, the task the ranking builds on")
        rate = float(values.mean()) if values.size else 0.0
        why = f"task {task}: {column} is 0/1 (positive rate {rate:.1%} in the sample): binary, {default_loss('binary')}"
        if first_profile is not None and only_where(profile, first_profile) and rate > 0:
            why += (f"; 1 only where {first.column} is 1 (a post-click outcome), but a 0 elsewhere is observed, "
                    f"so it is learned on every impression (the probability of {first.column} and {column}), not masked")
        return LabelPlan(task, column, "binary", default_loss("binary"), reason=why)
    if len(distinct) == 2:
        raise InferError(
            f"label column {column!r} of task {task!r} has two values ({shown}) but a binary label must be 0/1; "
            "recode it as 0/1")
    skew, _ = moments(values)
    heavy = bool(values.min() >= 0 and skew > SKEW_LOG1P)
    loss = MEAN_LOSS if heavy else default_loss("regression")
    mask = None
    if first_profile is not None and values.min() >= 0 and only_where(profile, first_profile):
        mask = first.column
    why = [f"task {task}: {column} takes {len(distinct)} values in [{values.min():g}, {values.max():g}]: regression, {loss}"]
    if heavy:
        zeros = float(np.mean(values == 0))
        why.append(f"non-negative, skewness {skew:.1f}, {zeros:.0%} zeros: predicts the mean in original units")
    weight = field_default(Task, "weight")
    if mask:
        weight, share = masked_weight(first_profile)
        why.append(f"non-zero only where {mask} is 1, so observed only there: masked by {mask}; observed on "
                   f"{share:.0%} of the rows, so weight {weight:g}: each observed row weighs what a row of "
                   f"{first.task} does")
    if first is None:
        why.append("the first label is not 0/1, so the spec is regression only (a 0/1 click-like label, "
                   "where the log has one, goes first)")
    return LabelPlan(task, column, "regression", loss, field_default(Task, "label_transform"), mask, weight,
                     "; ".join(why))


def label_entry(plan: LabelPlan, profile: ColumnProfile, click: ColumnProfile | None) -> dict:
    """The ``columns`` entry of a label column (bounds that the pipeline checks)."""
    entry: dict = {"name": plan.column, "type": profile.dtype}
    if plan.kind == "binary":
        entry.update(min=0, max=1)
    elif profile.valid_numbers.min() >= 0:
        entry["min"] = 0
    if profile.missing and plan.mask and click is not None:
        unclicked = click.numbers != 1
        if np.all(unclicked[~np.isfinite(profile.numbers)]):
            entry.update(required=False, default=0 if profile.dtype == "int" else 0.0)
    return entry


def task_entry(plan: LabelPlan) -> dict:
    """The ``tasks`` entry of one planned task; keys at their field default are written too where
    a reader of the YAML wants to see them (loss, weight), left out otherwise."""
    task = {"name": plan.task, "label": plan.column, "kind": plan.kind,
            "loss": plan.loss, "weight": plan.weight}
    if plan.label_transform != field_default(Task, "label_transform"):
        task["label_transform"] = plan.label_transform
    if plan.mask:
        task["mask"] = plan.mask
    if plan.kind == "regression" and plan.column.endswith(("_seconds", "_secs")):
        task["unit"] = "seconds"
    return task
