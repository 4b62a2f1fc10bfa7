""":class:`pipelines.analyze.AnalyzeTrain` for tables of train rows: per-batch partial results,
merged by Beam combiners.

- ``vocabulary`` features: each table's value counts (a list feature's elements) (``pyarrow.compute.value_counts``), merged
  per feature by key; then the same selection as the row path (count >= ``min_count``, values
  that fit on one line, the ``top_k`` most frequent, ties by ascending value), so the
  vocabularies are identical to it;
- ``zscore`` and ``log1p`` features: count, mean, M2, min and max per table with numpy, merged
  with :class:`~pipelines.analyze.MeanVarianceFn`'s parallel update;
- ``quantile`` features: ``ApproximateQuantiles`` with ``input_batched=True``, fed whole columns;
- label means and the train row count: per-table sums.
"""

from __future__ import annotations

from typing import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms.stats import ApproximateQuantiles

from feature_specs.spec import Feature, FeatureSpec
from pipelines.analyze import (_NUMERIC, MeanVarianceFn, _writable, assemble_statistics, interior_boundaries,
                               vocabulary_order)


class _MergeCounts(beam.CombineFn):
    """Merges ``{value: count}`` dicts into one."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, counts):
        for value, count in counts.items():
            accumulator[value] = accumulator.get(value, 0) + count
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            self.add_input(merged, other)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def _value_counts(table: pa.Table, names: Sequence[str]):
    """``(feature, {value: count})`` of one table; a list feature's elements are counted."""
    for name in names:
        column = table.column(name)
        if pa.types.is_list(column.type):
            column = pc.list_flatten(column)
        counts = pc.value_counts(column)
        yield name, dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


class _SelectVocabulary(beam.DoFn):
    """``(feature, {value: count})`` -> ``(feature, [values])``, as the row path selects them."""

    def __init__(self, features: Sequence[Feature]):
        self._features = {f.name: (f.top_k, f.min_count) for f in features}

    def setup(self):
        self._unlistable = {name: Metrics.counter("pipelines.analyze", f"vocabulary_values_with_line_breaks_{name}")
                            for name in self._features}

    def process(self, element):
        name, counts = element
        top_k, min_count = self._features[name]
        kept = []
        for value, count in counts.items():
            if count < min_count:
                continue
            if not _writable(value):
                self._unlistable[name].inc()
                continue
            kept.append((value, count))
        kept.sort(key=vocabulary_order)
        yield name, [value for value, _ in kept[:top_k]]


class ComputeBatchVocabularies(beam.PTransform):
    """Vocabularies of the ``vocabulary`` features: one ``(feature, [values])`` per feature, also
    for empty input (then the list is empty)."""

    def __init__(self, features: Sequence[Feature]):
        super().__init__()
        self._features = tuple(features)

    def expand(self, tables):
        if not self._features:
            return tables.pipeline | "NoVocabularies" >> beam.Create([])
        names = [f.name for f in self._features]
        empty = tables.pipeline | "EveryFeature" >> beam.Create([(name, {}) for name in names])
        counts = tables | "ValueCounts" >> beam.FlatMap(_value_counts, names)
        return ((counts, empty) | "WithEmpty" >> beam.Flatten()
                | "MergeCounts" >> beam.CombinePerKey(_MergeCounts())
                | "Select" >> beam.ParDo(_SelectVocabulary(self._features)))


def _moments(table: pa.Table, features):
    """``(feature, (count, mean, M2, min, max))`` of one table, in the transform's space."""
    for name, transform in features:
        raw = np.asarray(table.column(name).to_numpy(), dtype=np.float64)
        if not len(raw):
            continue
        x = np.log1p(raw) if transform == "log1p" else raw
        mean = float(x.mean())
        yield name, (len(x), mean, float(((x - mean) ** 2).sum()), float(raw.min()), float(raw.max()))


class _MergeMoments(MeanVarianceFn):
    """:class:`MeanVarianceFn` whose inputs are partial accumulators (one per table)."""

    def add_input(self, accumulator, element):
        return self.merge_accumulators([accumulator, element])


def _label_sums(table: pa.Table, tasks):
    """``(task, (sum, count))`` of the labels observed in one table (mask > 0, label present)."""
    for name, label, mask, log1p in tasks:
        observed = pc.is_valid(table.column(label))
        if mask is not None:
            observed = pc.and_(observed, pc.greater(pc.fill_null(pc.cast(table.column(mask), pa.float64()), 0.0), 0.0))
        values = np.asarray(pc.filter(pc.cast(table.column(label), pa.float64()), observed).to_numpy(), dtype=np.float64)
        if len(values):
            yield name, (float((np.log1p(values) if log1p else values).sum()), len(values))


def _sum_pairs(pairs):
    total, count = 0.0, 0
    for s, n in pairs:
        total += s
        count += n
    return total, count


class AnalyzeTrainBatches(beam.PTransform):
    """All statistics the model's preprocessing layers need, from tables of train rows.

    Args:
        spec: FeatureSpec. Its ``features`` are analyzed by transform.

    Returns (from ``expand``):
        ``(vocabularies, statistics)`` as :class:`pipelines.analyze.AnalyzeTrain` returns them.
    """

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self._spec = spec

    def _features(self, *transforms: str) -> list[Feature]:
        return [f for f in self._spec.features if f.transform in transforms]

    def expand(self, tables):
        vocabularies = tables | "Vocabularies" >> ComputeBatchVocabularies(self._features("vocabulary"))
        numeric_features = [(f.name, f.transform) for f in self._features(*_NUMERIC)]
        numeric = (tables | "Moments" >> beam.FlatMap(_moments, numeric_features)
                   | "MergeMoments" >> beam.CombinePerKey(_MergeMoments()))
        quantiles = []
        for feature in self._features("quantile"):
            quantiles.append(
                tables
                | f"Values[{feature.name}]" >> beam.Map(
                    lambda table, name: table.column(name).to_numpy().astype(np.float64).tolist(), feature.name)
                | f"Quantiles[{feature.name}]" >> ApproximateQuantiles.Globally(feature.num_buckets + 1,
                                                                               input_batched=True)
                | f"Boundaries[{feature.name}]" >> beam.Map(
                    lambda q, name: ("quantiles", name, interior_boundaries(q)), feature.name))
        tasks = tuple((t.name, t.label, t.mask, t.label_transform == "log1p") for t in self._spec.tasks)
        label_means = (tables | "LabelSums" >> beam.FlatMap(_label_sums, tasks)
                       | "SumLabels" >> beam.CombinePerKey(_sum_pairs)
                       | "LabelMeans" >> beam.MapTuple(lambda name, sc: ("label_mean", name, sc[0] / sc[1])))
        train_rows = (tables | "Rows" >> beam.Map(lambda table: table.num_rows)
                      | "CountRows" >> beam.CombineGlobally(sum))
        parts = (
            vocabularies | "TagVocabularies" >> beam.MapTuple(lambda name, values: ("vocabulary_size", name, len(values))),
            numeric | "TagNumeric" >> beam.MapTuple(lambda name, stats: ("numeric", name, stats)),
            train_rows | "TagRows" >> beam.Map(lambda count: ("train_rows", None, count)),
            label_means,
            *quantiles,
        )
        statistics = (
            parts
            | "Parts" >> beam.Flatten()
            | "Gather" >> beam.combiners.ToList()
            | "Assemble" >> beam.Map(assemble_statistics, self._spec)
        )
        return vocabularies, statistics
