"""Tests of the synthetic impression log (data_sets/clicklog.py)."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from data_sets import clicklog as synthetic
from data_sets.clicklog import ClicklogWorld, generate_clicklog, position_bias

ROWS = 40_000


def read_parquet(paths) -> pd.DataFrame:
    return pa.concat_tables([pq.read_table(p) for p in paths]).to_pandas()


def auc(y: np.ndarray, score: np.ndarray) -> float:
    rank = np.empty(len(score))
    rank[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    pos = int(y.sum())
    return (rank[y == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos))


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    out = tmp_path_factory.mktemp("clicklog")
    return read_parquet(generate_clicklog(str(out), rows=ROWS, seed=3))


def test_parquet_files_schema_rows_and_progress(tmp_path):
    calls = []
    paths = generate_clicklog(str(tmp_path / "new" / "dir"), rows=12_345, seed=1, chunk_rows=5_000,
                              progress=lambda done, total: calls.append((done, total)))
    assert [os.path.basename(p) for p in paths] == [f"impressions-0000{k}.parquet" for k in range(3)]
    assert calls == [(5_000, 12_345), (10_000, 12_345), (12_345, 12_345)]
    tables = [pq.read_table(p) for p in paths]
    assert [t.num_rows for t in tables] == [5_000, 5_000, 2_345]
    assert all(t.schema.remove_metadata() == synthetic.SCHEMA for t in tables)
    assert synthetic.COLUMNS == ("request_id", "timestamp", "user_id", "user_age", "device", "hour",
                                 "item_id", "item_category", "item_price", "item_popularity",
                                 "position", "clicked", "dwell_seconds")
    df = read_parquet(paths)
    assert df.groupby("request_id").size().iloc[-1] == 5  # the last request is cut to fit
    assert df.isna().sum().sum() == 0


def test_csv_holds_the_same_data_as_parquet(tmp_path):
    csv_paths = generate_clicklog(str(tmp_path / "csv"), rows=3_003, seed=5, fmt="csv", chunk_rows=2_000)
    pq_paths = generate_clicklog(str(tmp_path / "pq"), rows=3_003, seed=5)
    assert [os.path.basename(p) for p in csv_paths] == ["impressions-00000.csv", "impressions-00001.csv"]
    with open(csv_paths[0]) as f:
        assert f.readline().strip() == ",".join(synthetic.COLUMNS)
    table = pa.concat_tables([pa_csv.read_csv(p) for p in csv_paths])
    assert table.schema == synthetic.SCHEMA  # types as a CSV reader infers them
    pd.testing.assert_frame_equal(table.to_pandas(), read_parquet(pq_paths))


def test_same_arguments_same_data_and_chunking_does_not_matter(tmp_path):
    a = read_parquet(generate_clicklog(str(tmp_path / "a"), rows=5_000, seed=7, chunk_rows=5_000))
    b = read_parquet(generate_clicklog(str(tmp_path / "b"), rows=5_000, seed=7, chunk_rows=777))
    c = read_parquet(generate_clicklog(str(tmp_path / "c"), rows=5_000, seed=8))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert (a["clicked"] != c["clicked"]).any() and (a["user_id"] != c["user_id"]).any()


def test_rerun_replaces_files_of_an_earlier_run(tmp_path):
    generate_clicklog(str(tmp_path), rows=3_000, chunk_rows=1_000)
    paths = generate_clicklog(str(tmp_path), rows=3_000, chunk_rows=3_000)
    assert sorted(os.listdir(tmp_path)) == ["impressions-00000.parquet"] == [os.path.basename(p) for p in paths]


def test_values_follow_the_spec(log):
    assert log["user_age"].between(18, 80).all()
    assert log["hour"].between(0, 23).all() and log["hour"].nunique() == 24
    assert log["position"].between(1, 10).all()
    assert set(log["device"]) == {"mobile", "desktop", "tablet"}
    assert log["device"].value_counts().idxmax() == "mobile"
    assert 20 <= log["item_category"].nunique() <= 30
    assert (log["item_price"] >= 0).all() and (log["item_popularity"] >= 0).all()
    assert set(log["clicked"]) == {0, 1}
    assert log["user_id"].str.fullmatch(r"u\d+").all() and log["item_id"].str.fullmatch(r"i\d+").all()
    # an item keeps its category, price and popularity; popular items are shown more
    per_item = log.groupby("item_id")[["item_category", "item_price", "item_popularity"]].nunique()
    assert (per_item == 1).all().all()
    counts = log.groupby("item_id").agg(shown=("position", "size"), popularity=("item_popularity", "first"))
    assert counts["shown"].rank().corr(counts["popularity"].rank()) > 0.5
    assert counts["shown"].max() > 20 * counts["shown"].median()  # Zipf head
    # ids repeat enough to be learnable
    assert log["user_id"].value_counts().median() >= 5 and log["item_id"].value_counts().median() >= 5


def test_requests_have_one_context_and_ten_distinct_items(log):
    per_request = log.groupby("request_id", sort=False).agg(
        n=("position", "size"), users=("user_id", "nunique"), hours=("hour", "nunique"),
        devices=("device", "nunique"), ts=("timestamp", "nunique"), items=("item_id", "nunique"),
        positions=("position", lambda p: tuple(p)))
    assert (per_request[["users", "hours", "devices", "ts"]] == 1).all().all()
    assert (per_request["items"] == per_request["n"]).all() and (per_request["n"] == 10).all()
    assert (per_request["positions"] == tuple(range(1, 11))).all()
    ts = log.groupby("request_id", sort=False)["timestamp"].first().to_numpy()
    assert (np.diff(ts) > 0).all()


def test_dwell_is_positive_exactly_on_clicks(log):
    clicked = log["clicked"] == 1
    assert (log.loc[~clicked, "dwell_seconds"] == 0.0).all()
    assert (log.loc[clicked, "dwell_seconds"] > 0.0).all()
    assert 25.0 <= log.loc[clicked, "dwell_seconds"].median() <= 75.0


def test_ctr_and_the_known_position_bias(log):
    assert 0.08 <= log["clicked"].mean() <= 0.15
    by_position = log.groupby("position")["clicked"].mean()
    assert by_position[[1, 2]].mean() > by_position[[5, 6]].mean() > by_position[[9, 10]].mean()
    # Fit the position coefficient with the rest of the true logit as offset: it is the constant.
    world = ClicklogWorld.for_rows(ROWS, seed=3)
    offset = world.click_logit(log["user_id"], log["item_id"], log["hour"], log["device"], log["position"])
    offset = offset - position_bias(log["position"].to_numpy())
    x, y, beta = np.log(log["position"].to_numpy()), log["clicked"].to_numpy(), 0.0
    for _ in range(20):
        p = 1.0 / (1.0 + np.exp(-(offset + beta * x)))
        beta -= (x @ (p - y)) / ((x * x) @ (p * (1 - p)))
    assert beta == pytest.approx(-synthetic.POSITION_BIAS_COEF, abs=0.12)
    logit = offset + position_bias(log["position"].to_numpy())
    assert (1.0 / (1.0 + np.exp(-logit))).mean() == pytest.approx(y.mean(), abs=0.01)
    assert auc(y, logit) > 0.75


def test_position_bias_constant():
    assert position_bias(1) == 0.0
    assert position_bias(10) == pytest.approx(-synthetic.POSITION_BIAS_COEF * math.log(10))
    np.testing.assert_allclose(position_bias([1, 2, 4]), -0.35 * np.log([1, 2, 4]))


def test_task_correlation_links_dwell_to_click_affinity(tmp_path):
    world = ClicklogWorld.for_rows(20_000, seed=2)
    corr, clicks = {}, {}
    for rho in (0.0, 1.0):
        df = read_parquet(generate_clicklog(str(tmp_path / str(rho)), rows=20_000, seed=2, task_correlation=rho))
        c = df[df["clicked"] == 1]
        corr[rho] = np.corrcoef(world.affinity(c["user_id"], c["item_id"]), np.log(c["dwell_seconds"]))[0, 1]
        clicks[rho] = df["clicked"]
    assert abs(corr[0.0]) < 0.15 and corr[1.0] > 0.6
    pd.testing.assert_series_equal(clicks[0.0], clicks[1.0])  # only dwell depends on rho


def is_bad(df: pd.DataFrame) -> pd.Series:
    """Rows that break feature_specs/clicklog.yaml, from columns read as text."""
    bad = pd.Series(False, index=df.index)
    for name in ("request_id", "user_id", "item_id", "item_category", "device"):
        bad |= df[name].isna() | (df[name] == "")
    ranges = {"timestamp": (0, None), "hour": (0, 23), "item_price": (0, None), "item_popularity": (0, None),
              "position": (1, None), "clicked": (0, 1), "dwell_seconds": (0, None), "user_age": (0, 120)}
    for name, (low, high) in ranges.items():
        text = df[name].astype("string").fillna("")
        value = pd.to_numeric(text.replace("", np.nan), errors="coerce")
        missing = value.isna() if name != "user_age" else (value.isna() & (text != ""))
        bad |= missing | (value < low) | ((value > high) if high is not None else False)
    return bad


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_corrupt_fraction_makes_that_share_of_rows_bad(tmp_path, fmt):
    rows, fraction = 30_000, 0.05
    paths = generate_clicklog(str(tmp_path / "dirty"), rows=rows, seed=4, fmt=fmt, corrupt_fraction=fraction)
    clean = read_parquet(generate_clicklog(str(tmp_path / "clean"), rows=rows, seed=4))
    if fmt == "parquet":
        assert all(pq.read_schema(p).remove_metadata() == synthetic.SCHEMA for p in paths)
        dirty = read_parquet(paths)
    else:
        dirty = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths], ignore_index=True)
        assert set(dirty["item_price"]) & {"n/a"} and set(dirty["hour"]) & {"noon"}
    assert len(dirty) == rows
    bad = is_bad(dirty)
    assert bad.mean() == pytest.approx(fraction, abs=0.01)
    assert not is_bad(clean).any()
    assert numeric(dirty[~bad]).equals(numeric(clean[~bad.to_numpy()]))  # other rows untouched


def numeric(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float64, strings as object, index reset: comparable across formats."""
    out = {}
    for field in synthetic.SCHEMA:
        column = df[field.name]
        out[field.name] = (column.astype(object) if pa.types.is_string(field.type)
                           else pd.to_numeric(column, errors="coerce").astype("float64"))
    return pd.DataFrame(out).reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_every_kind_of_dirt_breaks_the_spec(tmp_path, fmt):
    paths = generate_clicklog(str(tmp_path), rows=3_000, seed=6, fmt=fmt, corrupt_fraction=1.0)
    if fmt == "parquet":
        dirty = read_parquet(paths)
    else:
        dirty = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths], ignore_index=True)
    assert is_bad(dirty).all()
    assert (dirty["user_id"].isna() | (dirty["user_id"] == "")).any()
    assert (pd.to_numeric(dirty["hour"], errors="coerce") == 27).any()
    assert (pd.to_numeric(dirty["item_price"], errors="coerce") < 0).any()


@pytest.mark.parametrize("kwargs, value", [
    ({"rows": 0}, "0"), ({"rows": 2.5}, "2.5"), ({"seed": -1}, "-1"),
    ({"task_correlation": 1.5}, "1.5"), ({"task_correlation": -1.1}, "-1.1"),
    ({"task_correlation": float("nan")}, "nan"), ({"fmt": "json"}, "'json'"),
    ({"chunk_rows": 0}, "0"), ({"corrupt_fraction": 2.0}, "2.0"),
])
def test_invalid_arguments_raise(tmp_path, kwargs, value):
    with pytest.raises(ValueError, match=value.replace(".", r"\.")):
        generate_clicklog(str(tmp_path), **kwargs)
    assert not any(name.startswith("impressions-") for name in os.listdir(tmp_path))


def test_signal_is_learnable_from_ids_and_position(log):
    """Target-encoded item_id and user_id plus log(position): held-out AUC well above 0.5."""
    request = log["request_id"].str[1:].astype(int).to_numpy()
    train, test = request % 5 != 0, request % 5 == 0
    y = log["clicked"].to_numpy()
    prior = y[train].mean()

    def encode(column):
        stats = log[train].groupby(column)["clicked"].agg(["sum", "count"])
        rate = (stats["sum"] + 10 * prior) / (stats["count"] + 10)
        p = log[column].map(rate).fillna(prior).to_numpy()
        return np.log(p / (1 - p))

    x = np.column_stack([np.ones(len(log)), encode("item_id"), encode("user_id"), np.log(log["position"])])
    w = np.zeros(x.shape[1])
    for _ in range(25):  # Newton steps of a logistic regression
        p = 1.0 / (1.0 + np.exp(-x[train] @ w))
        hessian = (x[train] * (p * (1 - p))[:, None]).T @ x[train]
        w -= np.linalg.solve(hessian + 1e-6 * np.eye(len(w)), x[train].T @ (p - y[train]))
    assert auc(y[test], x[test] @ w) > 0.65
    assert w[3] < 0  # lower positions get fewer clicks
