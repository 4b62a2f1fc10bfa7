"""Full-pass statistics of the train split, with Beam's own transforms.

- ``vocabulary`` features: ``Count.PerElement`` then ``Top``: values seen at least ``min_count``
  times, at most ``top_k`` of them, most frequent first, ties broken by ascending value.
- ``zscore`` and ``log1p`` features: a CombineFn for count, mean and population variance (of x, or
  of log1p(x)) and the raw min and max.
- ``quantile`` features: ``ApproximateQuantiles``: ``num_buckets - 1`` interior boundaries.
- ``hashing`` features need nothing.

Only ``spec.features`` (including ``role: bias`` ones) are analyzed, never plain columns.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.stats import ApproximateQuantiles

from feature_specs.artifacts import NumericStats, Statistics
from feature_specs.spec import Feature, FeatureSpec, Task
from feature_specs.values import is_missing

_NUMERIC = ("zscore", "log1p")
EMPTY_STATS = NumericStats(count=0, mean=0.0, variance=0.0, min=0.0, max=0.0)


def vocabulary_order(value_count: tuple[Any, int]) -> tuple[int, Any]:
    """Sort key putting the most frequent value first and breaking ties by ascending value."""
    value, count = value_count
    return -count, value


def _writable(value: Any) -> bool:
    # A vocabulary file holds one value per line, so a value with a line break cannot be listed.
    return not (isinstance(value, str) and ("\n" in value or "\r" in value))


class _KeepFrequent(beam.DoFn):
    """Keeps one feature's ``(value, count)`` pairs with count >= min_count that fit on one line."""

    def __init__(self, feature: Feature):
        self._name = feature.name
        self._min_count = feature.min_count
        self._unlistable = Metrics.counter(
            "pipelines.analyze", f"vocabulary_values_with_line_breaks_{feature.name}")

    def process(self, element):
        (name, value), count = element
        if name != self._name or count < self._min_count:
            return
        if not _writable(value):
            self._unlistable.inc()
            return
        yield value, count


def _vocabulary_values(row, names, lists=frozenset()):
    """``(feature, value)`` pairs of one row; a list feature gives one pair per element."""
    pairs = []
    for name in names:
        if name in lists:
            pairs += [(name, value) for value in row[name]]
        else:
            pairs.append((name, row[name]))
    return pairs


class ComputeVocabularies(beam.PTransform):
    """Vocabularies of the ``vocabulary`` features (a list feature's elements are counted, each
    occurrence once).

    Args:
        features: the features to build vocabularies for (their ``top_k`` and ``min_count`` apply).

    Returns (from ``expand``):
        A PCollection with one element ``(feature name, [values, most frequent first])`` per
        feature, also when the input is empty (then the list is empty).
    """

    def __init__(self, features: Sequence[Feature]):
        super().__init__()
        self._features = tuple(features)

    def expand(self, rows):
        if not self._features:
            return rows.pipeline | "NoVocabularies" >> beam.Create([])
        names = [f.name for f in self._features]
        counts = (
            rows
            | "Values" >> beam.FlatMap(_vocabulary_values, names, frozenset(f.name for f in self._features if f.is_list))
            | "CountValues" >> beam.combiners.Count.PerElement()
        )
        vocabularies = []
        for feature in self._features:
            vocabularies.append(
                counts
                | f"Frequent[{feature.name}]" >> beam.ParDo(_KeepFrequent(feature))
                | f"Top[{feature.name}]" >> beam.combiners.Top.Of(
                    feature.top_k, key=vocabulary_order, reverse=True)
                | f"Values[{feature.name}]" >> beam.Map(
                    lambda top, name: (name, [value for value, _ in top]), feature.name)
            )
        return vocabularies | "Collect" >> beam.Flatten()


class MeanVarianceFn(beam.CombineFn):
    """Count, mean and population variance of ``x``, and min and max of ``raw``.

    Inputs are ``(x, raw)`` pairs (``x`` is the value in the transform's space, e.g. log1p(raw)).
    Accumulators merge with Chan et al.'s parallel update, so the result does not depend on
    bundling beyond floating-point rounding. Outputs a :class:`NumericStats`; all zeros when no
    value was seen.
    """

    def create_accumulator(self):
        return 0, 0.0, 0.0, math.inf, -math.inf

    def add_input(self, accumulator, element):
        count, mean, m2, low, high = accumulator
        x, raw = element
        count += 1
        delta = x - mean
        mean += delta / count
        m2 += delta * (x - mean)
        return count, mean, m2, min(low, raw), max(high, raw)

    def merge_accumulators(self, accumulators):
        count, mean, m2, low, high = self.create_accumulator()
        for other_count, other_mean, other_m2, other_low, other_high in accumulators:
            if other_count == 0:
                continue
            total = count + other_count
            delta = other_mean - mean
            mean += delta * other_count / total
            m2 += other_m2 + delta * delta * count * other_count / total
            count = total
            low, high = min(low, other_low), max(high, other_high)
        return count, mean, m2, low, high

    def extract_output(self, accumulator):
        count, mean, m2, low, high = accumulator
        if count == 0:
            return EMPTY_STATS
        return NumericStats(count=count, mean=mean, variance=max(m2 / count, 0.0),
                            min=float(low), max=float(high))


def _numeric_values(row, features):
    for name, transform in features:
        raw = float(row[name])
        yield name, ((math.log1p(raw) if transform == "log1p" else raw), raw)


class ComputeNumericStats(beam.PTransform):
    """Statistics of ``zscore`` (raw space) and ``log1p`` (log1p space) features.

    Args:
        features: the numeric features to describe.

    Returns (from ``expand``):
        ``(feature name, NumericStats)`` elements, one per feature that has at least one value.
    """

    def __init__(self, features: Sequence[Feature]):
        super().__init__()
        self._features = tuple((f.name, f.transform) for f in features)

    def expand(self, rows):
        if not self._features:
            return rows.pipeline | "NoNumeric" >> beam.Create([])
        return (
            rows
            | "Values" >> beam.FlatMap(_numeric_values, self._features)
            | "MeanVariance" >> beam.CombinePerKey(MeanVarianceFn())
        )


def _label_values(row, tasks):
    """``(task, label as learned)`` for every task whose label is observed in ``row``."""
    for name, label, mask, log1p in tasks:
        if mask is not None and not float(row.get(mask) or 0) > 0:
            continue
        value = row.get(label)
        if is_missing(value):
            continue
        value = float(value)
        yield name, (math.log1p(value) if log1p else value)


class ComputeLabelMeans(beam.PTransform):
    """Mean label per task over the rows where it is observed (its mask > 0), in the space the
    model learns it (after ``label_transform``): the positive rate of a binary task.

    The model starts each task's output bias there (``mmoe.model``), so a rare positive class
    does not begin at probability 0.5.

    Args:
        tasks: the spec's tasks.

    Returns (from ``expand``):
        ``(task name, mean)`` elements, one per task with at least one observed label.
    """

    def __init__(self, tasks: Sequence[Task]):
        super().__init__()
        self._tasks = tuple((t.name, t.label, t.mask, t.label_transform == "log1p") for t in tasks)

    def expand(self, rows):
        return (
            rows
            | "Labels" >> beam.FlatMap(_label_values, self._tasks)
            | "Mean" >> beam.combiners.Mean.PerKey()
        )


def interior_boundaries(quantiles: Sequence[float]) -> list[float]:
    """Drops the min and max of ``ApproximateQuantiles``' output, then sorts and deduplicates."""
    return sorted({float(q) for q in quantiles[1:-1]})


class ComputeQuantiles(beam.PTransform):
    """Bucket boundaries of ``quantile`` features.

    Args:
        features: the quantile features; each gets ``num_buckets - 1`` interior boundaries (fewer
            where values repeat).

    Returns (from ``expand``):
        ``(feature name, [boundaries])`` elements, one per feature, also for empty input.
    """

    def __init__(self, features: Sequence[Feature]):
        super().__init__()
        self._features = tuple(features)

    def expand(self, rows):
        if not self._features:
            return rows.pipeline | "NoQuantiles" >> beam.Create([])
        boundaries = []
        for feature in self._features:
            boundaries.append(
                rows
                | f"Values[{feature.name}]" >> beam.Map(lambda row, name: float(row[name]), feature.name)
                | f"Quantiles[{feature.name}]" >> ApproximateQuantiles.Globally(feature.num_buckets + 1)
                | f"Boundaries[{feature.name}]" >> beam.Map(
                    lambda quantiles, name: (name, interior_boundaries(quantiles)), feature.name)
            )
        return boundaries | "Collect" >> beam.Flatten()


def assemble_statistics(parts, spec):
    """Builds :class:`Statistics` from tagged ``(kind, feature, value)`` parts.

    Numeric features without values (an empty train split) get all-zero statistics, so the file
    always describes every analyzed feature.
    """
    numeric, quantiles, sizes, train_rows, label_means = {}, {}, {}, 0, {}
    for kind, name, value in parts:
        if kind == "numeric":
            numeric[name] = value
        elif kind == "quantiles":
            quantiles[name] = value
        elif kind == "vocabulary_size":
            sizes[name] = value
        elif kind == "train_rows":
            train_rows = value
        elif kind == "label_mean":
            label_means[name] = float(value)
    for feature in spec.features:
        if feature.transform in _NUMERIC and feature.name not in numeric:
            numeric[feature.name] = EMPTY_STATS
    return Statistics(numeric=numeric, quantiles=quantiles, vocabulary_sizes=sizes, train_rows=train_rows,
                      label_means=label_means)


class AnalyzeTrain(beam.PTransform):
    """All statistics the model's preprocessing layers need, from the train split.

    Args:
        spec: FeatureSpec. Its ``features`` are analyzed by transform.

    Returns (from ``expand``):
        ``(vocabularies, statistics)``: ``(feature name, [values])`` elements, one per vocabulary
        feature, and a single :class:`Statistics` element.
    """

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self._spec = spec

    def _features(self, *transforms: str) -> list[Feature]:
        return [f for f in self._spec.features if f.transform in transforms]

    def expand(self, rows):
        vocabularies = rows | "Vocabularies" >> ComputeVocabularies(self._features("vocabulary"))
        numeric = rows | "NumericStats" >> ComputeNumericStats(self._features(*_NUMERIC))
        quantiles = rows | "Quantiles" >> ComputeQuantiles(self._features("quantile"))
        train_rows = rows | "CountRows" >> beam.combiners.Count.Globally()
        label_means = rows | "LabelMeans" >> ComputeLabelMeans(self._spec.tasks)
        parts = (
            vocabularies | "TagVocabularies" >> beam.MapTuple(
                lambda name, values: ("vocabulary_size", name, len(values))),
            numeric | "TagNumeric" >> beam.MapTuple(lambda name, stats: ("numeric", name, stats)),
            quantiles | "TagQuantiles" >> beam.MapTuple(lambda name, bounds: ("quantiles", name, bounds)),
            train_rows | "TagRows" >> beam.Map(lambda count: ("train_rows", None, count)),
            label_means | "TagLabels" >> beam.MapTuple(lambda name, mean: ("label_mean", name, mean)),
        )
        statistics = (
            parts
            | "Parts" >> beam.Flatten()
            | "Gather" >> beam.combiners.ToList()
            | "Assemble" >> beam.Map(assemble_statistics, self._spec)
        )
        return vocabularies, statistics
