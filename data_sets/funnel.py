"""A click -> conversion funnel whose conversion is only observed after a click.

Each request shows ``items_per_request`` items to one user. Users and items have latent vectors
in two independent spaces: ``click_dim`` factors drive the click (``a``), ``conversion_dim``
others drive the conversion given a click (``b``), and a standardized price pushes them apart
(cheaper items draw clicks, dearer ones convert less):

    P(click)              = sigmoid(click_bias + <u_click, v_click> + price_click * price)
    P(convert | click)    = sigmoid(conversion_bias + <u_conv, v_conv> + price_conversion * price)
    conversion            = click * Bernoulli(P(convert | click))

so the conversion rate learned on clicked rows alone is learned on a sample selected by the click
model (the bias ESMM removes). Every row also carries what only a generator knows: ``true_cvr``,
``P(convert | click)``, and ``would_convert``, the conversion drawn for the row as if it had been
clicked (equal to ``conversion`` where ``click`` is 1), so the conversion model can be judged on
every impression, not only on the clicked ones.

Columns: ``request_id``, ``user_id``, ``item_id``, ``item_category`` (strings), ``item_price``
(float, > 0), ``click``, ``conversion``, ``would_convert`` (int 0/1), ``true_cvr`` (float).
``feature_specs/funnel.yaml`` declares them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FILE_NAME = "funnel-00000.parquet"


@dataclass(frozen=True)
class FunnelConfig:
    """Constants of the generator (see the module docstring)."""

    users: int = 2_000
    items: int = 1_000
    categories: int = 40
    items_per_request: int = 10
    click_dim: int = 4
    conversion_dim: int = 4
    click_bias: float = -2.2
    conversion_bias: float = -1.6
    factor_scale: float = 0.6  # std of each latent factor: <u, v> has std factor_scale^2 * sqrt(dim)
    price_click: float = -0.5
    price_conversion: float = -0.8


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def funnel_table(rows: int, seed: int = 0, config: FunnelConfig = FunnelConfig()) -> pa.Table:
    """The generated impressions as one Arrow table (columns in the module docstring).

    Args:
        rows: int >= 1. Impressions; the last request may be shorter.
        seed: int. Same arguments give the same table.
        config: FunnelConfig.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows!r}")
    rng = np.random.default_rng(seed)
    c = config
    user_click = rng.normal(0.0, c.factor_scale, (c.users, c.click_dim))
    user_conversion = rng.normal(0.0, c.factor_scale, (c.users, c.conversion_dim))
    category_click = rng.normal(0.0, c.factor_scale, (c.categories, c.click_dim))
    category_conversion = rng.normal(0.0, c.factor_scale, (c.categories, c.conversion_dim))
    item_category = rng.integers(0, c.categories, c.items)
    # an item's factors: its category's plus its own, so the category alone explains part of them
    item_click = category_click[item_category] + rng.normal(0.0, c.factor_scale / 2, (c.items, c.click_dim))
    item_conversion = category_conversion[item_category] + rng.normal(0.0, c.factor_scale / 2, (c.items, c.conversion_dim))
    log_price = rng.normal(3.0, 0.8, c.items)
    price = (log_price - 3.0) / 0.8

    request = np.arange(rows) // c.items_per_request
    user = rng.integers(0, c.users, request.max() + 1)[request]
    item = rng.integers(0, c.items, rows)
    click_logit = c.click_bias + np.sum(user_click[user] * item_click[item], axis=1) + c.price_click * price[item]
    true_cvr = _sigmoid(c.conversion_bias + np.sum(user_conversion[user] * item_conversion[item], axis=1)
                        + c.price_conversion * price[item])
    click = (rng.random(rows) < _sigmoid(click_logit)).astype(np.int64)
    would_convert = (rng.random(rows) < true_cvr).astype(np.int64)
    return pa.table({
        "request_id": pa.array([f"r{r}" for r in request]),
        "user_id": pa.array([f"u{u}" for u in user]),
        "item_id": pa.array([f"i{i}" for i in item]),
        "item_category": pa.array([f"c{item_category[i]}" for i in item]),
        "item_price": pa.array(np.round(np.exp(log_price[item]), 2)),
        "click": pa.array(click),
        "conversion": pa.array(click * would_convert),
        "would_convert": pa.array(would_convert),
        "true_cvr": pa.array(true_cvr),
    })


def generate_funnel(output_dir: str, rows: int = 100_000, seed: int = 0, config: FunnelConfig = FunnelConfig()) -> str:
    """Writes :func:`funnel_table` as ``<output_dir>/funnel-00000.parquet`` and returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILE_NAME)
    pq.write_table(funnel_table(rows, seed, config), path)
    return path
