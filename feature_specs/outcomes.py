"""Recognises the columns of a sampled log that behave like outcomes of the impression.

An impression log carries, beside the labels a spec trains on, other things that happened after
the impression was shown: a like, a follow, a "long view" defined from the watch time, time
spent on the author's profile. They are known only after the fact, so a model given them as
features scores well offline and cannot be served (the values do not exist at ranking time).
:func:`outcome` says why a column looks like one, against every declared label:

* it is non-zero almost only (:data:`ONLY_WHERE_SHARE`) where a label is positive, and that label
  is positive in at most :data:`ONLY_WHERE_MAX_BASE` of the rows (a like, a profile visit: things
  a click makes possible);
* it is a 0/1 column whose value correlates :data:`FLAG_CORRELATION` or more with a label (a "long
  view" flag), or any number whose value or non-zero-ness correlates :data:`OUTCOME_CORRELATION`
  or more (a genuine feature rarely does: age against "never married" in the census data is
  0.74, and stays a feature);
* it is a 0/1 column set in at most :data:`RARE_FLAG_RATE` of the rows, and where it is 1 a label is
  positive :data:`RARE_FLAG_LIFT` times as often as overall (a follow, a comment);
* its name says it is a duration (watch, play, dwell, stay, ..._time, ..._seconds) and its value
  correlates :data:`DURATION_CORRELATION` or more with a label: a time measured after the
  impression.

The first and third need a share the label's base rate gives by chance with probability at most
:data:`CHANCE` (a binomial tail), so a handful of sampled rows cannot make a column an outcome.

``mmoe spec infer`` leaves these columns out and lists them as label candidates
(``--keep-feature COLUMN`` keeps one that is in fact known at ranking time). Plain numpy: no Beam,
no TensorFlow.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

from feature_specs.profile import ColumnProfile, correlation

ONLY_WHERE_SHARE = 0.95
ONLY_WHERE_MAX_BASE = 0.5
CHANCE = 1e-4  # a share this unlikely under the label's base rate is not luck (binomial tail)
FLAG_CORRELATION = 0.6
OUTCOME_CORRELATION = 0.9
RARE_FLAG_RATE = 0.15
RARE_FLAG_LIFT = 2.0
DURATION_CORRELATION = 0.3

_DURATION_NAME = re.compile(r"(watch|play|dwell|stay|view|duration|time_spent|spent|seconds|secs|_ms$|_time$)")
# a duration measured before the impression: the item's own length, or the user's past
_PRIOR_NAME = re.compile(r"(^|_)(video|item|clip|track|song|avg|mean|median|past|prev|previous|hist|history|"
                         r"historical|last|total|lifetime|[0-9]+d|daily|weekly|per)(_|$)")


def chance(hits: int, rows: int, base: float) -> float:
    """P(at least ``hits`` positives in ``rows`` rows) when each is positive with probability ``base``."""
    if hits <= 0:
        return 1.0
    if base <= 0.0:
        return 0.0
    if base >= 1.0:
        return 1.0
    k = np.arange(hits, rows + 1)
    logs = (math.lgamma(rows + 1) - np.array([math.lgamma(i + 1) + math.lgamma(rows - i + 1) for i in k])
            + k * math.log(base) + (rows - k) * math.log1p(-base))
    return float(min(1.0, np.exp(logs).sum()))


def positive(label: ColumnProfile) -> np.ndarray:
    """``(rows,)`` float: 1 where the label is positive (> 0), 0 where it is not, NaN where missing."""
    values = label.numbers
    return np.where(np.isfinite(values), (values > 0).astype(float), np.nan)


def _only_where(nonzero: np.ndarray, label_name: str, hit: np.ndarray) -> str | None:
    """Set (present and non-zero) almost only where the label is positive; the base rate counts
    every row with a label, so a column present only in clicked rows is caught too."""
    labelled = np.isfinite(hit)
    set_rows = labelled & np.isfinite(nonzero) & (nonzero == 1)
    if not set_rows.any():
        return None
    base = float(hit[labelled].mean())
    share = float(hit[set_rows].mean())
    if base > ONLY_WHERE_MAX_BASE or share < ONLY_WHERE_SHARE:
        return None
    if chance(int(hit[set_rows].sum()), int(set_rows.sum()), base) > CHANCE:
        return None
    return (f"non-zero in {int(set_rows.sum()):,} sampled rows, {share:.0%} of them where {label_name} is positive "
            f"({base:.0%} of all rows): recorded after {label_name}")


def _rare_flag(profile: ColumnProfile, label_name: str, hit: np.ndarray) -> str | None:
    values = profile.numbers
    known = np.isfinite(values) & np.isfinite(hit)
    if not known.any() or not set(np.unique(values[known]).tolist()) <= {0.0, 1.0}:
        return None
    set_rows = known & (values == 1)
    rate = float(set_rows.sum() / known.sum())
    if not set_rows.any() or rate > RARE_FLAG_RATE:
        return None
    base = float(hit[known].mean())
    share = float(hit[set_rows].mean())
    if base == 0 or share < RARE_FLAG_LIFT * base:
        return None
    if chance(int(hit[set_rows].sum()), int(set_rows.sum()), base) > CHANCE:
        return None
    return (f"a 0/1 column set in {rate:.1%} of the sampled rows, like the labels; where it is 1, {label_name} "
            f"is positive {share:.0%} of the time against {base:.0%} overall ({share / base:.1f}x): an outcome flag")


def _is_duration(profile: ColumnProfile) -> bool:
    name = profile.name.lower()
    values = profile.valid_numbers
    return (bool(_DURATION_NAME.search(name)) and not _PRIOR_NAME.search(name)
            and values.size > 0 and float(values.min()) >= 0)


def outcome_evidence(profile: ColumnProfile, labels: Mapping[str, ColumnProfile]) -> str | None:
    """What makes a numeric column look like an outcome of one of ``labels`` (see the module
    docstring), in words; None when nothing does (and for non-numeric columns).

    Args:
        profile: ColumnProfile. The column, not a label.
        labels: mapping label column -> its ColumnProfile, every declared label, in task order.
    """
    if profile.numbers is None:
        return None
    values = profile.numbers
    nonzero = np.where(np.isfinite(values), (values != 0).astype(float), np.nan)
    for label_name, label in labels.items():
        if label.numbers is None:
            continue
        hit = positive(label)
        why = _only_where(nonzero, label_name, hit) or _rare_flag(profile, label_name, hit)
        if why is None:
            flag = set(np.unique(profile.valid_numbers).tolist()) <= {0.0, 1.0}
            for how, series in (("value", values), ("non-zero", nonzero)):
                strength = correlation(series, label.numbers)
                if strength >= (FLAG_CORRELATION if flag else OUTCOME_CORRELATION):
                    why = f"{'a 0/1 column whose' if flag else 'its'} {how} correlates {strength:.2f} with the label {label_name}"
                    break
        if why is None and _is_duration(profile):
            strength = correlation(values, label.numbers)
            if strength >= DURATION_CORRELATION:
                why = (f"a duration (by its name) whose value correlates {strength:.2f} with the label {label_name}: "
                       "a time measured after the impression")
        if why:
            return why
    return None


def outcome(profile: ColumnProfile, labels: Mapping[str, ColumnProfile]) -> tuple[str, str] | None:
    """("outcome", reason) for ``mmoe spec infer`` when :func:`outcome_evidence` finds some; None otherwise."""
    why = outcome_evidence(profile, labels)
    if why is None:
        return None
    return "outcome", (f"{why}. An outcome of the impression, not known at ranking time: left out as a label "
                       f"candidate (add it as a task with --label TASK={profile.name}; --keep-feature "
                       f"{profile.name} keeps it as a feature if it is known before the impression)")
