"""Decides what a proposed spec does with each sampled column that is not a label or the group.

:func:`exclusion` says why a column is left out (a row id, a timestamp, a constant, a leaked
label, ...), :func:`feature_choice` writes the feature entry of one that stays (its type,
transform, embedding width, gaps, bias role) with the reason shown as the YAML comment.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from feature_specs.outcomes import outcome
from feature_specs.profile import ColumnProfile, correlation, moments, snake_name
from feature_specs.sample import InferError
from feature_specs.spec import LIST_DTYPES, MAX_LIST_LENGTH, Feature, ListSpec, field_default
from feature_specs.time_columns import describe, time_unit

VOCABULARY_MAX_INT_DISTINCT = 50  # ints with at most this many values from 0/1 in a narrow span are codes
CODE_MAX_SPAN = 100
CODE_MAX_DISTINCT_ANY_RANGE = 12
VOCABULARY_MAX_DISTINCT = 1000  # more distinct values in the sample: hashing
HASHING_MAX_BINS = 2**18
EMBEDDING_MAX_DIM = 32
ID_UNIQUE_SHARE = 0.99
ID_MIN_ROWS = 20
MOSTLY_MISSING_SHARE = 0.5
LEAK_CORRELATION = 0.98
SKEW_LOG1P = 1.0
HEAVY_TAIL_KURTOSIS = 10.0
QUANTILE_BUCKETS = 16
MISSING_STRING = "__missing__"
KEEPABLE_FLAGS = ("outcome", "leak")  # what keep_features overrides: a judgement on the values, not a fact

_CODE_NAME = re.compile(r"(^|_)(id|ids|code|cat|category|categorical|type|class)(_|$)")
_POSITION_NAME = re.compile(r"^(position|pos|slot|display_position|rank_position)$")


@dataclass
class ColumnChoice:
    """What the spec does with one column, and why.

    Args:
        name: str. Column name.
        dtype: str or None. The inferred type (see :class:`ColumnProfile`).
        role: str. ``feature``, ``bias``, ``label``, ``group`` (the ``group_by`` column) or
            ``excluded`` (an excluded row id may still be declared under ``columns`` as the split key).
        reason: str. The explanation written as the YAML comment.
        entry: dict. The spec entry (under ``features`` or ``columns``); empty when excluded.
        flag: str. Why an excluded column is out: ``id``, ``timestamp``, ``date``, ``leak``,
            ``outcome`` (a label candidate, :mod:`feature_specs.outcomes`), ``list``, ``constant``,
            ``empty``, ``unsupported`` or ``name``; empty otherwise.
    """

    name: str
    dtype: str | None
    role: str
    reason: str
    entry: dict = field(default_factory=dict)
    flag: str = ""


def embedding_dim(cardinality: int) -> int:
    """``round(6 * cardinality ** 0.25)``, at least 2, at most :data:`EMBEDDING_MAX_DIM` and the cardinality."""
    width = int(round(6 * max(cardinality, 1) ** 0.25))
    return max(2, min(width, EMBEDDING_MAX_DIM, max(cardinality, 2)))


def looks_like_id(profile: ColumnProfile) -> bool:
    return (profile.dtype in ("int", "string") and profile.present >= ID_MIN_ROWS
            and profile.distinct >= ID_UNIQUE_SHARE * profile.present)


def looks_like_code(profile: ColumnProfile) -> bool:
    """An int column of codes (few values in a narrow range, or a name such as ``*_id``/``*_code``)."""
    if _CODE_NAME.search(snake_name(profile.name)):
        return True
    values = profile.valid_numbers
    if profile.distinct <= CODE_MAX_DISTINCT_ANY_RANGE:
        return True
    # label-encoded codes start at 0 or 1 and fill a narrow range (hour 0..23; not age 18..80)
    return (profile.distinct <= VOCABULARY_MAX_INT_DISTINCT and float(values.min()) <= 1
            and float(values.max() - values.min()) < CODE_MAX_SPAN)


def target_encoding(profile: ColumnProfile, label: ColumnProfile) -> np.ndarray:
    """``(rows,)`` leave-one-out mean label of each row's category (NaN where missing or alone).

    A column whose encoding correlates almost perfectly with the label names the label in other
    words (``marital_stat`` for ``never_married``); leaving the row out keeps rare values from
    looking perfect.
    """
    codes, labels = profile.codes, label.numbers
    known = (codes >= 0) & np.isfinite(labels)
    size = len(profile.counts)
    sums = np.bincount(codes[known], weights=labels[known], minlength=size)
    counts = np.bincount(codes[known], minlength=size)
    encoded = np.full(codes.shape, math.nan)
    shared = known & (counts[np.maximum(codes, 0)] > 1)
    encoded[shared] = (sums[codes[shared]] - labels[shared]) / (counts[codes[shared]] - 1)
    return encoded


def categorical_entry(profile: ColumnProfile) -> tuple[dict, str]:
    """A vocabulary or hashing feature entry and its explanation."""
    distinct = profile.distinct
    singletons = sum(1 for c in profile.counts.values() if c == 1)
    singleton_share = singletons / distinct if distinct else 0.0
    if distinct > VOCABULARY_MAX_DISTINCT or (distinct > 100 and singleton_share > 0.5):
        bins = min(HASHING_MAX_BINS, 1 << max(1, math.ceil(math.log2(4 * distinct))))
        dim = embedding_dim(distinct)
        return (dict(transform="hashing", num_bins=bins, embedding_dim=dim),
                f"{distinct:,} distinct values in {profile.present:,} rows ({singleton_share:.0%} seen once): too many "
                f"to list, so hashing into {bins:,} bins (about 4x the values seen); "
                f"embedding {dim} = 6 * {distinct}^0.25, capped")
    min_count = 2 if distinct > 50 and singleton_share > 0.2 else field_default(Feature, "min_count")
    top_k = min(field_default(Feature, "top_k"), max(16, 2 * distinct))  # never above the spec default
    dim = embedding_dim(distinct)
    why = (f"{distinct:,} distinct values: vocabulary of at most {top_k} (2x the values seen, room for new ones)"
           + (f", values seen once in the train split out ({singleton_share:.0%} of values are singletons)"
              if min_count > 1 else "")
           + f"; embedding {dim} = 6 * {distinct}^0.25" + (", capped" if dim in (EMBEDDING_MAX_DIM, distinct) else ""))
    return dict(transform="vocabulary", top_k=top_k, min_count=min_count, embedding_dim=dim), why


def numeric_entry(profile: ColumnProfile) -> tuple[dict, str]:
    """A zscore, log1p or quantile feature entry and its explanation."""
    values = profile.valid_numbers
    low, high = float(values.min()), float(values.max())
    skew, kurtosis = moments(values)
    if low >= 0 and skew > SKEW_LOG1P:
        _, log_kurtosis = moments(np.log1p(values))
        if log_kurtosis > HEAVY_TAIL_KURTOSIS:
            return quantile_entry(profile, f"non-negative, skewness {skew:.1f}, and still heavy-tailed after log1p "
                                            f"(kurtosis {log_kurtosis:.0f})")
        return (dict(transform="log1p", min=0),
                f"non-negative (range [{low:g}, {high:g}]) and right-skewed (skewness {skew:.1f}): log1p, then z-score; "
                "min 0 keeps log1p defined")
    if kurtosis > HEAVY_TAIL_KURTOSIS:
        return quantile_entry(profile, f"heavy tails (excess kurtosis {kurtosis:.0f}, range [{low:g}, {high:g}])")
    return (dict(transform="zscore"),
            f"range [{low:g}, {high:g}], skewness {skew:.1f}: z-score with the train split's mean and variance")


def quantile_entry(profile: ColumnProfile, why: str) -> tuple[dict, str]:
    buckets = max(2, min(QUANTILE_BUCKETS, profile.distinct))
    dim = embedding_dim(buckets)
    return (dict(transform="quantile", num_buckets=buckets, embedding_dim=dim),
            f"{why}: {buckets} quantile buckets of the train split, embedded in {dim}")


def fill_value(profile: ColumnProfile) -> tuple[Any, str]:
    """(default, how it is said) for a missing value of a scalar column: the marker
    :data:`MISSING_STRING` for text, the sample's median for numbers."""
    if profile.dtype == "string":
        return MISSING_STRING, f"the marker {MISSING_STRING}"
    if profile.dtype == "int":
        default = int(np.median(profile.valid_numbers))
        return default, f"the median {default}"
    default = float(f"{np.median(profile.valid_numbers):.6g}")
    return default, f"the median {default:g}"


def missing_value_entry(profile: ColumnProfile) -> tuple[dict, str]:
    """``required: false`` and a default for a column with gaps; empty when it has none."""
    if not profile.missing:
        return {}, ""
    share = profile.missing / profile.rows
    default, said = fill_value(profile)
    return dict(required=False, default=default), f"; {share:.1%} missing in the sample, filled with {said}"


def time_exclusion(profile: ColumnProfile) -> tuple[str, str] | None:
    """("timestamp" or "date", reason) for a time column (:func:`feature_specs.time_columns.time_unit`)."""
    unit = time_unit(profile)
    if unit is None:
        return None
    unseen = ("not a model feature: it names when a row was logged, so a model would learn the days of the "
              "training data, and every value served (or in a time-split eval) is one it never saw")
    if unit in ("seconds", "milliseconds"):
        values = profile.valid_numbers.astype(np.int64)
        span = f"{describe(int(values.min()), unit)} .. {describe(int(values.max()), unit)}"
        return "timestamp", f"epoch {unit} ({span}): time, {unseen}"
    if unit == "yyyymmdd":
        days = sorted({int(v) for v in (profile.counts or profile.valid_numbers)})
        return "date", (f"yyyymmdd dates ({describe(days[0], unit)} .. {describe(days[-1], unit)}, {len(days)} days): "
                        f"time, {unseen}")
    return "timestamp", f"{'date/time text' if unit == 'text' else 'datetime values'}: time, {unseen}"


def exclusion(profile: ColumnProfile, labels: Mapping[str, ColumnProfile]) -> tuple[str, str] | None:
    """(flag, reason) when a column should not be a feature; None when it should."""
    name = profile.name
    if not name.isidentifier():
        return "name", f"the name {name!r} is not an identifier (letters, digits, _): rename the column to use it"
    if profile.lists is not None:
        if profile.lists.element_type not in LIST_DTYPES:
            return "list", (f"{profile.lists}: list features hold {' or '.join(LIST_DTYPES)} elements, so it is "
                            "left out")
        return None  # proposed as a list feature (list_choice)
    if profile.dtype is None:
        kind = profile.kinds.most_common(1)[0][0] if profile.kinds else "no value"
        if not profile.present:
            return "empty", "no value in the sample"
        if kind == "datetime":
            return time_exclusion(profile)
        hint = {"bool": "write booleans as 0/1", "nested": "objects are not supported"}.get(kind, "")
        return "unsupported", f"holds {kind} values: {hint}"
    timed = time_exclusion(profile)
    if timed:
        return timed
    if profile.missing > MOSTLY_MISSING_SHARE * profile.rows:  # an outcome present only where a label is
        return outcome(profile, labels) or (
            "empty", f"{profile.missing / profile.rows:.0%} of the sampled rows have no value")
    if profile.distinct <= 1:
        value = next(iter(profile.counts)) if profile.counts else f"{profile.valid_numbers[0]:g}"
        return "constant", f"the same value in every sampled row ({value}): carries no signal"
    if looks_like_id(profile):
        return "id", (f"looks like a row id ({profile.distinct:,} distinct values in {profile.present:,} rows): "
                      "memorizes rows, generalizes to none")
    return leak(profile, labels) or outcome(profile, labels)


def leak(profile: ColumnProfile, labels: Mapping[str, ColumnProfile]) -> tuple[str, str] | None:
    """("leak", reason) when the column predicts a label almost perfectly: as a number, as
    "non-zero" (a dwell time for a click), or through its categories (leave-one-out encoding)."""
    categorical = profile.dtype == "string" or (profile.dtype == "int" and looks_like_code(profile))
    for label_name, label in labels.items():
        series = []
        if profile.numbers is not None:
            nonzero = np.where(np.isfinite(profile.numbers), (profile.numbers != 0).astype(float), np.nan)
            series += [("value", profile.numbers), ("non-zero", nonzero)]
        if categorical and profile.distinct <= VOCABULARY_MAX_DISTINCT:
            series.append(("category", target_encoding(profile, label)))
        for how, values in series:
            strength = correlation(values, label.numbers)
            if strength >= LEAK_CORRELATION:
                return "leak", (f"its {how} correlates {strength:.3f} with the label {label_name}: "
                                "a leaked label, known only after the fact")
    return None


def list_choice(profile: ColumnProfile) -> ColumnChoice:
    """The feature entry of a list-valued column: its element type, a ``list:`` block with the
    separator found (delimited text) and a ``max_length`` holding the sample's longest list
    (where the default is shorter), and a vocabulary (or hashing) over the elements."""
    shape = profile.lists
    block: dict[str, Any] = {}
    if shape.source == "delimited" and shape.separator != field_default(ListSpec, "separator"):
        block["separator"] = shape.separator
    longest = min(shape.longest, MAX_LIST_LENGTH)
    if longest > field_default(ListSpec, "max_length"):
        block["max_length"] = longest
    distinct = shape.distinct_elements
    if distinct > VOCABULARY_MAX_DISTINCT:
        bins = min(HASHING_MAX_BINS, 1 << max(1, math.ceil(math.log2(4 * distinct))))
        entry = dict(transform="hashing", num_bins=bins)
        how = f"hashing into {bins:,} bins (about 4x the elements seen)"
    else:
        top_k = min(field_default(Feature, "top_k"), max(16, 2 * distinct))
        entry = dict(transform="vocabulary", top_k=top_k)
        how = f"a vocabulary of at most {top_k} elements"
    dim = embedding_dim(distinct)
    length = block.get("max_length", field_default(ListSpec, "max_length"))
    why = (f"{shape}: a {shape.element_type} list feature, at most {length} elements kept "
           f"(longest in the sample: {shape.longest}), {how}, embedded in {dim} and pooled by "
           f"{field_default(ListSpec, 'pooling')}")
    element_type = shape.element_type
    if shape.negative:  # int list elements are >= 0 (-1 pads): negative codes are read as text instead
        element_type = "string"
        why += "; negative ints among the elements, so they are read as text (int list elements are >= 0)"
    full = {"name": profile.name, "type": element_type, "list": block, **entry, "embedding_dim": dim}
    return ColumnChoice(profile.name, element_type, "feature", why, full)


def feature_choice(profile: ColumnProfile) -> ColumnChoice:
    """The feature entry for a column that passed :func:`exclusion`."""
    if profile.lists is not None:
        return list_choice(profile)
    dtype = profile.dtype
    treat_as_code = dtype == "string" or (dtype == "int" and looks_like_code(profile))
    if treat_as_code:
        entry, why = categorical_entry(profile)
        kind = "text" if dtype == "string" else "integer codes"
        why = f"{kind}; {why}"
    else:
        entry, why = numeric_entry(profile)
    missing_entry, missing_why = missing_value_entry(profile)
    if profile.bad:
        missing_why += (f"; {profile.bad} sampled value(s) are not {dtype} (e.g. {profile.bad_example!r}): "
                        "the pipeline rejects those rows")
    role = "feature"
    full = {"name": profile.name, "type": dtype, **entry, **missing_entry}
    if _POSITION_NAME.match(snake_name(profile.name)) and dtype == "int" and entry.get("transform") == "vocabulary":
        serving = int(profile.valid_numbers.min())
        full.update(role="bias", serving_value=serving)
        role = "bias"
        why += (f"; a display position: learned by the shallow bias tower in training and fixed to {serving} "
                "(the top slot) at serving, so rankings ignore where items were logged")
    return ColumnChoice(profile.name, dtype, role, why + missing_why, full)


def kept_choice(choice: ColumnChoice, profile: ColumnProfile) -> ColumnChoice:
    """The feature entry of an excluded outcome or leak that ``keep_features`` names, saying so.

    Raises:
        InferError: for a column left out for another reason (an id, time, a list, ...).
    """
    if choice.flag not in KEEPABLE_FLAGS:
        raise InferError(f"--keep-feature {choice.name}: the column is left out as {choice.flag} ({choice.reason}); "
                         "only outcome and leak judgements can be overridden")
    kept = feature_choice(profile)
    kept.reason = f"kept as a feature by --keep-feature although flagged {choice.flag}: {choice.reason}; " + kept.reason
    return kept
