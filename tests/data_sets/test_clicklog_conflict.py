"""The generator's conflicting-drivers setting: what draws a click shortens the dwell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_sets.clicklog import CONFLICTING_DRIVERS, ClicklogWorld, clicklog_tables

ROWS, SEED = 20_000, 2


def _log(rho: float) -> pd.DataFrame:
    return pa.concat_tables(clicklog_tables(ROWS, seed=SEED, task_correlation=rho)).to_pandas()


def test_conflicting_drivers_turn_the_click_affinity_against_dwell():
    world = ClicklogWorld.for_rows(ROWS, seed=SEED)
    logs = {rho: _log(rho) for rho in (CONFLICTING_DRIVERS, 0.5)}
    corr = {}
    for rho, df in logs.items():
        clicked = df[df["clicked"] == 1]
        corr[rho] = np.corrcoef(world.affinity(clicked["user_id"], clicked["item_id"]),
                                np.log(clicked["dwell_seconds"]))[0, 1]
    assert CONFLICTING_DRIVERS < 0
    assert corr[CONFLICTING_DRIVERS] < -0.5 and corr[0.5] > 0.3
    # the clicks are the same log: only the dwell's driver changed
    pd.testing.assert_series_equal(logs[CONFLICTING_DRIVERS]["clicked"], logs[0.5]["clicked"])
    medians = {rho: df.loc[df["clicked"] == 1, "dwell_seconds"].median() for rho, df in logs.items()}
    assert medians[CONFLICTING_DRIVERS] < medians[0.5]  # clicked rows have above-average affinity


@pytest.mark.parametrize("rho", [-1.0001, 1.5, float("nan")])
def test_task_correlation_outside_minus_one_to_one_is_refused(rho):
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):
        next(clicklog_tables(100, task_correlation=rho))


def test_a_rotated_own_factor_drives_dwell_with_the_clicks_latents_and_changes_nothing_else():
    world = ClicklogWorld.for_rows(ROWS, seed=SEED)
    rotation = world.latent_rotation
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(len(rotation)), atol=1e-9)
    separate = pa.concat_tables(clicklog_tables(ROWS, seed=SEED, task_correlation=0.0)).to_pandas()
    rotated = pa.concat_tables(clicklog_tables(ROWS, seed=SEED, task_correlation=0.0,
                                               own_factor="rotated")).to_pandas()
    for name in separate.columns:
        if name != "dwell_seconds":
            pd.testing.assert_series_equal(separate[name], rotated[name])
    clicked = rotated[rotated["clicked"] == 1]
    log_dwell = np.log(clicked["dwell_seconds"])
    driver = world.own_factor(clicked["user_id"], clicked["item_id"], "rotated")
    separate_driver = world.own_factor(clicked["user_id"], clicked["item_id"])  # shares only the item depth
    rotated_corr, separate_corr = (np.corrcoef(d, log_dwell)[0, 1] for d in (driver, separate_driver))
    assert rotated_corr > 0.6 and rotated_corr - separate_corr > 0.15, (rotated_corr, separate_corr)  # drives dwell ...
    users, items = np.repeat(np.arange(1000), 20), np.tile(np.arange(500), 40)
    shared = world._affinity(users, items)
    assert abs(np.corrcoef(shared, world._own_factor(users, items, "rotated"))[0, 1]) < 0.15  # ... not the click's


def test_an_unknown_own_factor_is_refused():
    with pytest.raises(ValueError, match="own_factor"):
        next(clicklog_tables(100, own_factor="shared"))


def test_a_dense_own_factor_gives_each_task_its_own_function_of_age_and_price():
    world = ClicklogWorld.for_rows(ROWS, seed=SEED)
    separate = pa.concat_tables(clicklog_tables(ROWS, seed=SEED, task_correlation=0.5)).to_pandas()
    dense = pa.concat_tables(clicklog_tables(ROWS, seed=SEED, task_correlation=0.5, own_factor="dense")).to_pandas()
    for name in separate.columns:
        if name not in ("clicked", "dwell_seconds"):
            pd.testing.assert_series_equal(separate[name], dense[name])
    users = np.array([int(u[1:]) for u in dense["user_id"]])
    items = np.array([int(i[1:]) for i in dense["item_id"]])
    for_click, for_dwell = world.dense_functions(users, items)
    assert abs(np.corrcoef(for_click, for_dwell)[0, 1]) < 0.2 and 0.7 < for_click.var() < 1.3
    clicked = dense["clicked"].to_numpy() == 1
    assert for_click[clicked].mean() > for_click[~clicked].mean() + 0.5  # clicks follow their function ...
    log_dwell = np.log(dense.loc[clicked, "dwell_seconds"])
    assert np.corrcoef(for_dwell[clicked], log_dwell)[0, 1] > 0.4  # ... dwell its own
    assert abs(np.corrcoef(for_click[clicked], log_dwell)[0, 1]) < 0.2
