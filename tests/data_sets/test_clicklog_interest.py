"""The clicklog's drifting interest (``interest_weight``): off by default and then without effect on
the log; on, it moves clicks towards the user's category of the period, and nothing else."""

import numpy as np
import pyarrow as pa
import pytest

from data_sets.clicklog import CATEGORIES, ClicklogWorld, clicklog_tables

ROWS, SEED = 20_000, 4


def table(**kwargs) -> pa.Table:
    return pa.concat_tables(clicklog_tables(ROWS, seed=SEED, **kwargs))


def matches(log: pa.Table) -> np.ndarray:
    world = ClicklogWorld.for_rows(ROWS, SEED)
    users = np.array([int(u[1:]) for u in log.column("user_id").to_pylist()])
    items = np.array([int(i[1:]) for i in log.column("item_id").to_pylist()])
    return world.interest_match(users, items, log.column("timestamp").to_numpy()).astype(bool)


def test_weight_zero_is_the_log_without_it():
    assert table().equals(table(interest_weight=0.0))


def test_the_interest_lifts_clicks_on_the_periods_category_and_changes_nothing_else():
    plain, drifting = table(), table(interest_weight=2.0)
    for name in plain.column_names:
        if name not in ("clicked", "dwell_seconds"):
            assert plain.column(name).equals(drifting.column(name)), name
    match = matches(drifting)
    assert 0.01 < match.mean() < 0.1  # about 1 in 30 categories
    clicks_plain, clicks_drifting = plain.column("clicked").to_numpy(), drifting.column("clicked").to_numpy()
    lift = clicks_drifting[match].mean() / clicks_plain[match].mean()
    assert lift > 2.0, lift
    assert abs(clicks_drifting[~match].mean() - clicks_plain[~match].mean()) < 0.01


def test_each_user_has_one_interest_per_period_drawn_from_the_categories():
    world = ClicklogWorld.for_rows(ROWS, SEED)
    assert world.user_interest.shape == (world.num_users, 4)
    assert world.user_interest.min() >= 0 and world.user_interest.max() < len(CATEGORIES)
    assert (world.user_interest[:, 0] != world.user_interest[:, -1]).mean() > 0.9


@pytest.mark.parametrize("weight", [-0.5, 11.0, "1"])
def test_a_bad_weight_is_refused(weight):
    with pytest.raises(ValueError, match="interest_weight"):
        next(clicklog_tables(100, interest_weight=weight))
