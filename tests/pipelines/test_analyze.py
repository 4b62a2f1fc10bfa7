"""Train-split statistics: vocabularies, mean/variance, quantile boundaries, Statistics."""

import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from feature_specs.artifacts import NumericStats
from pipelines.analyze import (AnalyzeTrain, ComputeLabelMeans, ComputeNumericStats, ComputeQuantiles,
                               ComputeVocabularies, MeanVarianceFn, interior_boundaries)


def feature(spec, name):
    return next(f for f in spec.features if f.name == name)


def rows_of(**columns):
    length = len(next(iter(columns.values())))
    return [{name: values[i] for name, values in columns.items()} for i in range(length)]


def test_vocabulary_order_counts_ties_min_count_and_top_k(tiny_spec, test_pipeline):
    # user: top_k 3, min_count 2. Counts: d 4, b 2, a 2, c 2, e 1 -> d, then ties a < b < c; e dropped.
    users = ["b", "d", "a", "c", "d", "e", "b", "d", "a", "c", "d"]
    # hour: ints order by count, then numerically (2 before 10).
    hours = [10, 2, 10, 2, 5, 5, 5, 7, 7, 7, 7]
    rows = rows_of(user=users, hour=hours)
    with test_pipeline() as p:
        vocabularies = (p | beam.Create(rows)
                        | ComputeVocabularies([feature(tiny_spec, "user"), feature(tiny_spec, "hour")]))
        assert_that(vocabularies, equal_to([("user", ["d", "a", "b"]), ("hour", [7, 5, 2, 10])]))


def test_vocabulary_skips_values_with_line_breaks_and_handles_empty_input(tiny_spec, test_pipeline):
    rows = rows_of(user=["ok", "ok", "two\nlines", "two\nlines", "two\nlines"])
    with test_pipeline() as p:
        vocabularies = p | beam.Create(rows) | "Some" >> ComputeVocabularies([feature(tiny_spec, "user")])
        empty = p | "Empty" >> beam.Create([]) | "None" >> ComputeVocabularies([feature(tiny_spec, "user")])
        assert_that(vocabularies, equal_to([("user", ["ok"])]), label="Values")
        assert_that(empty, equal_to([("user", [])]), label="EmptyInput")


@pytest.mark.parametrize("chunks", [1, 3, 7])
def test_mean_variance_fn_matches_numpy(chunks):
    rng = np.random.default_rng(0)
    values = rng.lognormal(2.0, 1.5, 1000)
    fn = MeanVarianceFn()
    accumulators = []
    for part in np.array_split(values, chunks):
        acc = fn.create_accumulator()
        for v in part:
            acc = fn.add_input(acc, (math.log1p(v), v))
        accumulators.append(acc)
    stats = fn.extract_output(fn.merge_accumulators(accumulators))
    logs = np.log1p(values)
    assert stats.count == 1000
    assert stats.mean == pytest.approx(logs.mean(), rel=1e-12)
    assert stats.variance == pytest.approx(logs.var(), rel=1e-10)  # population variance
    assert (stats.min, stats.max) == (values.min(), values.max())
    assert fn.extract_output(fn.create_accumulator()) == NumericStats(0, 0.0, 0.0, 0.0, 0.0)


def test_numeric_stats_zscore_in_raw_space_log1p_in_log_space(tiny_spec, test_pipeline):
    ages, prices = [20, 30, 40, 50], [0.0, 1.0, 3.0, 7.0]
    with test_pipeline() as p:
        stats = (p | beam.Create(rows_of(age=ages, price=prices))
                 | ComputeNumericStats([feature(tiny_spec, "age"), feature(tiny_spec, "price")]))
        logs = np.log1p(prices)
        assert_that(stats, equal_to([
            ("age", NumericStats(4, 35.0, 125.0, 20.0, 50.0)),
            ("price", NumericStats(4, float(logs.mean()), float(logs.var()), 0.0, 7.0)),
        ], equals_fn=lambda a, b: a[0] == b[0] and np.allclose(list(vars(a[1]).values()),
                                                               list(vars(b[1]).values()))))


def test_quantile_boundaries_are_interior_sorted_and_deduplicated(tiny_spec, test_pipeline):
    pop = feature(tiny_spec, "pop")  # num_buckets 4 -> 3 boundaries
    assert interior_boundaries([0.0, 2.0, 1.0, 1.0, 9.0]) == [1.0, 2.0]
    with test_pipeline() as p:
        spread = p | beam.Create(rows_of(pop=[float(i) for i in range(100)])) | ComputeQuantiles([pop])
        constant = p | "Const" >> beam.Create(rows_of(pop=[5.0] * 10)) | "Q2" >> ComputeQuantiles([pop])
        assert_that(spread, equal_to([("pop", [24.0, 49.0, 74.0])]), label="Spread")
        assert_that(constant, equal_to([("pop", [5.0])]), label="Constant")


def test_analyze_train_assembles_statistics_for_features_only(tiny_spec, test_pipeline):
    rows = rows_of(user=["a", "a", "b", "b", "c"], hour=[1, 1, 2, 3, 3], age=[20, 30, 40, 50, 60],
                   price=[1.0] * 5, pop=[0.1, 0.2, 0.3, 0.4, 0.5], query=["q"] * 5,
                   position=[1, 2, 1, 2, 1], request_id=["r1", "r1", "r2", "r2", "r3"],
                   ts=[1, 2, 3, 4, 5], clicked=[1, 0, 1, 0, 1], dwell=[1.0] * 5)
    with test_pipeline() as p:
        vocabularies, statistics = p | beam.Create(rows) | AnalyzeTrain(tiny_spec)
        assert_that(vocabularies, equal_to([("user", ["a", "b"]), ("hour", [1, 3, 2]),
                                            ("position", [1, 2])]), label="Vocabularies")

        def check(statistics_list):
            (stats,) = statistics_list
            assert stats.train_rows == 5
            assert stats.vocabulary_sizes == {"user": 2, "hour": 3, "position": 2}
            assert set(stats.numeric) == {"age", "price"}  # not clicked/dwell/ts: plain columns
            assert stats.numeric["age"] == NumericStats(5, 40.0, 200.0, 20.0, 60.0)
            assert set(stats.quantiles) == {"pop"} and len(stats.quantiles["pop"]) == 3
            assert stats.label_means == pytest.approx({"click": 0.6, "engagement": math.log1p(1.0)})

        assert_that(statistics, check, label="Statistics")


def test_label_means_count_observed_rows_in_the_learned_space(tiny_spec, test_pipeline):
    # engagement is masked by clicked and learned as log1p(dwell); a blank label is not observed
    rows = rows_of(clicked=[1, 0, 1, 1, 0], dwell=[3.0, 100.0, 7.0, None, 0.0])
    with test_pipeline() as p:
        means = p | beam.Create(rows) | ComputeLabelMeans(tiny_spec.tasks)
        assert_that(means, equal_to([("click", 0.6), ("engagement", (math.log(4.0) + math.log(8.0)) / 2)]))


def test_analyze_empty_train_split_gives_empty_statistics(tiny_spec, test_pipeline):
    with test_pipeline() as p:
        vocabularies, statistics = p | beam.Create([]) | AnalyzeTrain(tiny_spec)
        assert_that(vocabularies, equal_to([("user", []), ("hour", []), ("position", [])]),
                    label="Vocabularies")

        def check(statistics_list):
            (stats,) = statistics_list
            assert stats.train_rows == 0
            assert stats.numeric == {"age": NumericStats(0, 0.0, 0.0, 0.0, 0.0),
                                     "price": NumericStats(0, 0.0, 0.0, 0.0, 0.0)}
            assert stats.quantiles == {"pop": []}
            assert stats.vocabulary_sizes == {"user": 0, "hour": 0, "position": 0}
            assert stats.label_means == {}
            stats.to_json()  # valid JSON (no NaN)

        assert_that(statistics, check, label="Statistics")
