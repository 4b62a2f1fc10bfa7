"""The funnel generator: deterministic, conversion only after a click, a selected click sample."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_sets.funnel import funnel_table, generate_funnel
from feature_specs.spec_reader import bundled_spec_path, load_spec


def test_same_seed_same_table_and_conversion_only_after_a_click(tmp_path):
    table = funnel_table(20_000, seed=3)
    assert table.equals(funnel_table(20_000, seed=3)) and not table.equals(funnel_table(20_000, seed=4))
    rows = table.to_pandas()
    assert (rows.conversion <= rows.click).all()
    assert (rows.conversion[rows.click == 1] == rows.would_convert[rows.click == 1]).all()
    assert 0.05 < rows.click.mean() < 0.25 and 0.01 < rows.conversion.mean() < 0.1
    # clicked rows are a selected sample: their conversion rate is not the population's
    assert rows.true_cvr[rows.click == 1].mean() > rows.true_cvr.mean() + 0.02
    assert rows.groupby("request_id").user_id.nunique().max() == 1  # one user per request
    path = generate_funnel(str(tmp_path), rows=100, seed=0)
    assert pq.read_table(path).num_rows == 100


def test_columns_are_the_funnel_specs():
    spec = load_spec(bundled_spec_path("funnel"))
    assert set(funnel_table(10).column_names) == {c.name for c in spec.all_columns}
    with pytest.raises(ValueError, match="rows must be >= 1"):
        funnel_table(0)
    assert np.isfinite(funnel_table(50).column("true_cvr").to_numpy()).all()
