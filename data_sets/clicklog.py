"""Deterministic synthetic impression log with a known ground truth (the `clicklog` spec).

Every request shows ``ITEMS_PER_REQUEST`` = 10 items to one user, at positions 1..10; one row
per shown item. The world (users and items) is drawn once from the seed and shared by all
chunks; requests are drawn in blocks of ``BLOCK_REQUESTS`` with a generator keyed by
``(seed, block index)``, so the data depends on ``rows``, ``seed``, ``task_correlation``,
``corrupt_fraction`` and the output format, but never on ``chunk_rows``.

The generative model (all constants are module constants below):

* Users: ``max(1000, rows / 50)`` of them, at most 20000. Each has an activity weight
  (log-normal, so some users are seen far more often), an age (18..80), a time-zone offset,
  a primary device (mobile/desktop/tablet with probabilities ``DEVICE_PROBS``), a latent
  vector ``p_u`` (dim ``LATENT_DIM`` = 8), a preference ``pref[u, c]`` for each of the 30
  categories (low rank: a ``TASTE_DIM`` = 3 taste times a per-category vector, plus an
  age slope per category, so age predicts categories) and a click propensity ``b_u``.
* Items: ``max(500, rows / 100)`` of them, at most 20000. Each has one category, a
  log-normal price (per-category median), a latent vector ``q_i``, a quality ``b_i`` and a
  Zipf popularity (exponent ``ZIPF_EXPONENT``): the 10 candidates of a request are drawn in
  proportion to it, and ``item_popularity`` is the expected impressions per 10,000 with
  10% multiplicative noise.
* A request: a user (by activity), a timestamp (requests evenly spread over
  ``SPAN_SECONDS`` and strictly increasing), the user's local ``hour``, a device (the
  primary one with probability ``PRIMARY_DEVICE_PROB``), and 10 distinct candidates in a
  random order (the logging policy does not rank, so position is not confounded with
  relevance and the click-vs-position curve shows the bias alone).
* Click: ``clicked ~ Bernoulli(sigmoid(logit))`` with::

      a      = LATENT_WEIGHT * p_u.q_i / sqrt(8) + pref[u, category(i)]
      s      = a / std(a)                                        # "shared" affinity, ~N(0, 1)
      logit  = CLICK_INTERCEPT + AFFINITY_COEF * s + b_u + b_i
               + POPULARITY_COEF * z(log popularity_i)
               + HOUR_EFFECT_AMPLITUDE * cos(2 pi (hour - 21) / 24)
               + DEVICE_EFFECT[device] + position_bias(position)
      position_bias(k) = -POSITION_BIAS_COEF * log(k)             # 0 at k=1, -0.81 at k=10

  which gives a CTR of about 11% (``ClicklogWorld.click_logit`` computes this logit).
* Dwell (clicked rows only, 0.0 elsewhere): log-normal seconds::

      log(dwell) = DWELL_LOG_MU + DWELL_SCALE * (rho * s + sqrt(1 - rho^2) * o)
                   + DWELL_NOISE * N(0, 1),     rounded to 0.1 s, at least 1 s

  where ``rho = task_correlation`` and ``o`` is a second standardized factor unrelated to
  clicks: a separate user x item latent product (dim ``OWN_LATENT_DIM``) plus an item
  "depth" partly driven by price (dearer items are read longer). ``rho = 1``: the same
  affinity drives both tasks; ``rho = 0``: the dwell driver is independent of the click
  driver; ``rho < 0``: **conflicting drivers**, what draws a user's click to an item
  shortens the visit (clickbait), so a model that shares one representation between the
  tasks is pulled two ways by them (``CONFLICTING_DRIVERS`` is the setting ``mmoe compare``
  was measured on). Only the dwell column depends on ``task_correlation``; with the same seed the
  clicks are identical. Median dwell of clicked rows: about 34 s at rho = 0, 50 s at 0.5,
  64 s at 1 (clicked rows have above-average ``s``).
  ``own_factor="rotated"`` (``mmoe generate --own-factor rotated``) builds ``o``'s latent part from
  the click's own vectors instead, through another bilinear form: ``p_u . (R q_i) / sqrt(8)``
  with ``R`` a random rotation (``latent_rotation``, its own random stream). Both tasks then want
  the same embedding contents but different functions of them, nearly uncorrelated (about -0.05
  with ``s`` at seed 0). ``own_factor="dense"`` puts the conflict in dense features instead, above
  any embedding table: ``o = sqrt(2) sin(F (z_age - z_price))`` (``z``: standardized user age and
  item log price, ``F = DENSE_FREQUENCY``), and the click logit gains
  ``DENSE_CLICK_WEIGHT * sqrt(2) sin(F (z_age + z_price))``; the two functions are nearly
  uncorrelated, so one shared representation of age x price serves one task at the other's cost.
  This one setting changes the clicks as well as the dwell.
* Drifting interest (``interest_weight`` w, 0 by default, which leaves the log as without it):
  each user has one category of interest per period of ``SPAN_SECONDS / INTEREST_PERIODS``
  (3.5 days), drawn anew each period (uniformly, independent of ``pref``), and the click logit
  gains ``w`` where the candidate's category is the user's current interest. A user id's
  embedding can only learn the user's average over the periods; what the user clicked
  recently (a behaviour history, ``pipelines/history.py``) reveals the current one.

Dirt (``corrupt_fraction``): each row is corrupted with that probability, with one kind
drawn uniformly from ``CORRUPTION_KINDS`` (``CSV_CORRUPTION_KINDS`` adds non-numeric text
for CSV). Every kind breaks a rule of ``feature_specs/clicklog.yaml``: a missing required
value (null; an empty field in CSV), a value out of the spec's range (hour 27, position 0,
age 150, a negative price or dwell), NaN in a float column, or (CSV only) text such as
``"n/a"`` in a numeric column. Parquet column types never change (nulls are Arrow nulls).
The dirt is drawn after everything else, so the other rows are the same as with no dirt.

At 100,000 rows (seed 0) the true logit has AUC 0.87, and a logistic regression on
target-encoded user, item, user x category and age x category plus log(position) reaches
0.74 on held-out requests, recovering a position coefficient near -0.35.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

ITEMS_PER_REQUEST = 10
LATENT_DIM = 8
OWN_LATENT_DIM = 4
BLOCK_REQUESTS = 1024
START_TIMESTAMP = 1_700_000_000  # 2023-11-14T22:13:20Z
SPAN_SECONDS = 14 * 24 * 3600

DEVICES = ("mobile", "desktop", "tablet")
DEVICE_PROBS = (0.62, 0.28, 0.10)
PRIMARY_DEVICE_PROB = 0.8
TIMEZONE_OFFSETS = (-8, -5, -3, 0, 1, 2, 3, 5, 8, 9)
CATEGORIES = (
    "electronics", "books", "fashion", "home", "sports", "beauty", "toys", "grocery", "garden",
    "automotive", "music", "movies", "games", "health", "pets", "office", "baby", "jewelry",
    "shoes", "outdoors", "tools", "crafts", "travel", "food", "software", "kitchen", "furniture",
    "art", "phones", "cameras",
)

ZIPF_EXPONENT = 0.9
USER_AGE_MEAN, USER_AGE_SD = 38.0, 13.0  # users' ages: normal, rounded, clipped to 18..80
USER_ACTIVITY_SIGMA = 1.0
LATENT_WEIGHT = 0.6
TASTE_DIM = 3
CATEGORY_PREF_SIGMA = 1.2
CATEGORY_AGE_SIGMA = 0.6
PRICE_LOG_MEDIAN = math.log(25.0)
CATEGORY_PRICE_SIGMA = 0.7
ITEM_PRICE_SIGMA = 0.5

CLICK_INTERCEPT = -3.1
AFFINITY_COEF = 1.5
USER_PROPENSITY_SIGMA = 0.6
ITEM_QUALITY_SIGMA = 0.8
POPULARITY_COEF = 0.3
HOUR_EFFECT_AMPLITUDE = 0.15
DEVICE_EFFECT = {"mobile": 0.0, "desktop": -0.15, "tablet": 0.1}
POSITION_BIAS_COEF = 0.35

INTEREST_PERIODS = 4  # the drifting interest's periods over SPAN_SECONDS (interest_weight > 0)

OWN_FACTORS = ("separate", "rotated", "dense")  # what the dwell-only factor o is made of (module docstring)
DENSE_FREQUENCY = 2.0  # own_factor="dense": the sines' frequency in standardized age and log price
DENSE_CLICK_WEIGHT = 2.0  # own_factor="dense": the click logit's weight of its own sine
CONFLICTING_DRIVERS = -0.8  # a task_correlation where naive sharing hurts (README, `mmoe compare`)
DWELL_LOG_MU = math.log(30.0)
DWELL_SCALE = 0.8
DWELL_NOISE = 0.5
PRICE_DEPTH_WEIGHT = 0.5

CORRUPTION_KINDS = (
    "missing_user_id", "missing_item_id", "missing_device", "missing_clicked",
    "hour_out_of_range", "position_out_of_range", "age_out_of_range",
    "negative_price", "nan_price", "nan_popularity", "negative_dwell",
)
CSV_CORRUPTION_KINDS = CORRUPTION_KINDS + ("text_price", "text_hour", "text_position")

SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("timestamp", pa.int64()),
    ("user_id", pa.string()),
    ("user_age", pa.int64()),
    ("device", pa.string()),
    ("hour", pa.int64()),
    ("item_id", pa.string()),
    ("item_category", pa.string()),
    ("item_price", pa.float64()),
    ("item_popularity", pa.float64()),
    ("position", pa.int64()),
    ("clicked", pa.int64()),
    ("dwell_seconds", pa.float64()),
])
COLUMNS = tuple(SCHEMA.names)
FORMATS = ("parquet", "csv")
_FILE_PATTERN = re.compile(r"impressions-\d{5}\.(parquet|csv)")


def position_bias(position):
    """Additive click-logit term of the position: ``-POSITION_BIAS_COEF * log(position)``.

    Args:
        position: int or array of ints >= 1.

    Returns:
        float or float array; 0 at position 1, negative below.
    """
    return -POSITION_BIAS_COEF * np.log(np.asarray(position, dtype=np.float64))


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """The generator of one part (``key``) of the log drawn from ``seed``; parts are independent."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-12)


@functools.cache
def _strings(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())  # built on first use: pa.array imports pandas


def _ids(prefix: str, n: int) -> pa.Array:
    return pa.array([f"{prefix}{k}" for k in range(n)], pa.string())


def _parse_ids(values, prefix: str) -> np.ndarray:
    array = pa.array(np.asarray(values, dtype=object), pa.string())
    if pc.any(pc.invert(pc.starts_with(array, prefix))).as_py():
        raise ValueError(f"ids must look like {prefix!r} followed by a number")
    return pc.cast(pc.utf8_slice_codeunits(array, len(prefix)), pa.int64()).to_numpy()


@dataclass(frozen=True, eq=False)
class ClicklogWorld:
    """The fixed users and items of one synthetic log, drawn from ``seed`` alone.

    Build with ``ClicklogWorld.create(num_users, num_items, seed)`` or
    ``ClicklogWorld.for_rows(rows, seed)`` (the sizes ``generate_clicklog`` uses). Arrays are
    indexed by the number in the id: ``user_id == "u17"`` is row 17.
    """

    seed: int
    user_cdf: np.ndarray          # (num_users,) cumulative activity, for sampling
    user_age: np.ndarray          # (num_users,) int
    user_tz: np.ndarray           # (num_users,) hours added to UTC
    user_device: np.ndarray       # (num_users,) index into DEVICES
    user_latent: np.ndarray       # (num_users, LATENT_DIM)
    user_own_latent: np.ndarray   # (num_users, OWN_LATENT_DIM)
    user_category_pref: np.ndarray  # (num_users, len(CATEGORIES))
    user_propensity: np.ndarray   # (num_users,)
    item_cdf: np.ndarray          # (num_items,) cumulative shown probability
    item_category: np.ndarray     # (num_items,) index into CATEGORIES
    item_price: np.ndarray        # (num_items,)
    item_popularity: np.ndarray   # (num_items,) expected impressions per 10,000, noisy
    item_latent: np.ndarray       # (num_items, LATENT_DIM)
    item_own_latent: np.ndarray   # (num_items, OWN_LATENT_DIM)
    item_quality: np.ndarray      # (num_items,)
    item_popularity_z: np.ndarray  # (num_items,) standardized log popularity
    item_depth: np.ndarray        # (num_items,)
    user_interest: np.ndarray     # (num_users, INTEREST_PERIODS) category index per period
    latent_rotation: np.ndarray   # (LATENT_DIM, LATENT_DIM) orthogonal, for own_factor="rotated"
    affinity_std: float
    user_ids: pa.Array            # (num_users,) "u0", "u1", ...
    item_ids: pa.Array            # (num_items,) "i0", "i1", ...

    @property
    def num_users(self) -> int:
        return len(self.user_age)

    @property
    def num_items(self) -> int:
        return len(self.item_price)

    @staticmethod
    def sizes_for_rows(rows: int) -> tuple[int, int]:
        """(num_users, num_items) used for a log of ``rows`` impressions."""
        return min(20_000, max(1000, rows // 50)), min(20_000, max(500, rows // 100))

    @classmethod
    def for_rows(cls, rows: int, seed: int = 0) -> "ClicklogWorld":
        return cls.create(*cls.sizes_for_rows(rows), seed=seed)

    @classmethod
    def create(cls, num_users: int, num_items: int, seed: int = 0) -> "ClicklogWorld":
        rng = rng_for(seed, 0)
        n_cat = len(CATEGORIES)
        activity = rng.lognormal(0.0, USER_ACTIVITY_SIGMA, num_users)
        age = np.clip(np.rint(rng.normal(USER_AGE_MEAN, USER_AGE_SD, num_users)), 18, 80).astype(np.int64)
        tz = rng.choice(np.array(TIMEZONE_OFFSETS), num_users)
        device = rng.choice(len(DEVICES), num_users, p=DEVICE_PROBS)
        user_latent = rng.normal(0.0, 1.0, (num_users, LATENT_DIM))
        user_own = rng.normal(0.0, 1.0, (num_users, OWN_LATENT_DIM))
        taste = rng.normal(0.0, 1.0, (num_users, TASTE_DIM))
        category_taste = rng.normal(0.0, CATEGORY_PREF_SIGMA / math.sqrt(TASTE_DIM), (n_cat, TASTE_DIM))
        age_slope = rng.normal(0.0, CATEGORY_AGE_SIGMA, n_cat)
        pref = taste @ category_taste.T + np.outer((age - USER_AGE_MEAN) / USER_AGE_SD, age_slope)
        propensity = rng.normal(0.0, USER_PROPENSITY_SIGMA, num_users)

        category_share = rng.dirichlet(np.full(n_cat, 3.0))
        category = rng.choice(n_cat, num_items, p=category_share)
        category_log_price = PRICE_LOG_MEDIAN + rng.normal(0.0, CATEGORY_PRICE_SIGMA, n_cat)
        log_price = category_log_price[category] + rng.normal(0.0, ITEM_PRICE_SIGMA, num_items)
        price = np.round(np.exp(log_price), 2)
        rank = rng.permutation(num_items) + 1
        shown = rank ** -ZIPF_EXPONENT
        shown /= shown.sum()
        popularity = np.round(1e4 * shown * rng.lognormal(0.0, 0.1, num_items), 4)
        item_latent = rng.normal(0.0, 1.0, (num_items, LATENT_DIM))
        item_own = rng.normal(0.0, 1.0, (num_items, OWN_LATENT_DIM))
        quality = rng.normal(0.0, ITEM_QUALITY_SIGMA, num_items)
        depth = (PRICE_DEPTH_WEIGHT * _zscore(log_price)
                 + math.sqrt(1.0 - PRICE_DEPTH_WEIGHT**2) * rng.normal(0.0, 1.0, num_items))

        interest = rng_for(seed, 2).integers(0, n_cat, (num_users, INTEREST_PERIODS))  # its own stream
        rotation, _ = np.linalg.qr(rng_for(seed, 3).normal(0.0, 1.0, (LATENT_DIM, LATENT_DIM)))  # and this

        user_cdf = np.cumsum(activity / activity.sum())
        item_cdf = np.cumsum(shown)
        # Std of the raw affinity over shown (user, item) pairs: latent part has variance
        # LATENT_WEIGHT^2, category part the variance of pref over users x shown categories.
        category_weight = np.bincount(category, weights=shown, minlength=n_cat)
        pref_var = float((pref**2 @ category_weight).mean() - ((pref @ category_weight).mean()) ** 2)
        return cls(
            seed=seed, user_cdf=user_cdf, user_age=age, user_tz=tz, user_device=device,
            user_latent=user_latent, user_own_latent=user_own, user_category_pref=pref,
            user_propensity=propensity, item_cdf=item_cdf, item_category=category,
            item_price=price, item_popularity=popularity, item_latent=item_latent,
            item_own_latent=item_own, item_quality=quality,
            item_popularity_z=_zscore(np.log(popularity + 1e-3)), item_depth=depth, user_interest=interest,
            latent_rotation=rotation,
            affinity_std=math.sqrt(LATENT_WEIGHT**2 + pref_var),
            user_ids=_ids("u", num_users), item_ids=_ids("i", num_items),
        )

    # --- ground truth, by index ---------------------------------------------------------

    def _affinity(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        latent = np.einsum("nd,nd->n", self.user_latent[u], self.item_latent[i]) / math.sqrt(LATENT_DIM)
        pref = self.user_category_pref[u, self.item_category[i]]
        return (LATENT_WEIGHT * latent + pref) / self.affinity_std

    def dense_functions(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(click's, dwell's)`` functions of user age and item log price for ``own_factor="dense"``:
        ``sqrt(2) sin(F (z_age + z_price))`` and ``sqrt(2) sin(F (z_age - z_price))``, each of variance
        about 1 and nearly uncorrelated with the other."""
        age = (self.user_age[u] - USER_AGE_MEAN) / USER_AGE_SD
        price = (np.log(self.item_price[i]) - PRICE_LOG_MEDIAN) / math.hypot(CATEGORY_PRICE_SIGMA, ITEM_PRICE_SIGMA)
        return (math.sqrt(2.0) * np.sin(DENSE_FREQUENCY * (age + price)),
                math.sqrt(2.0) * np.sin(DENSE_FREQUENCY * (age - price)))

    def _own_factor(self, u: np.ndarray, i: np.ndarray, kind: str = "separate") -> np.ndarray:
        if kind == "dense":
            return self.dense_functions(u, i)[1]
        if kind == "rotated":  # the click's latent vectors, through another bilinear form
            latent = np.einsum("nd,nd->n", self.user_latent[u], self.item_latent[i] @ self.latent_rotation.T)
            latent = latent / math.sqrt(LATENT_DIM)
        else:
            latent = np.einsum("nd,nd->n", self.user_own_latent[u], self.item_own_latent[i])
            latent = latent / math.sqrt(OWN_LATENT_DIM)
        return (latent + self.item_depth[i]) / math.sqrt(2.0)

    def _click_logit(self, u, i, hour, device, position) -> np.ndarray:
        device_effect = np.array([DEVICE_EFFECT[d] for d in DEVICES])
        return (CLICK_INTERCEPT + AFFINITY_COEF * self._affinity(u, i)
                + self.user_propensity[u] + self.item_quality[i]
                + POPULARITY_COEF * self.item_popularity_z[i]
                + HOUR_EFFECT_AMPLITUDE * np.cos(2.0 * np.pi * (np.asarray(hour) - 21) / 24.0)
                + device_effect[device] + position_bias(position))

    def interest_match(self, u: np.ndarray, i: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
        """1.0 where item ``i``'s category is user ``u``'s interest at ``timestamp``, else 0.0."""
        period = np.clip((np.asarray(timestamp) - START_TIMESTAMP) * INTEREST_PERIODS // SPAN_SECONDS,
                         0, INTEREST_PERIODS - 1)
        return (self.item_category[i] == self.user_interest[u, period]).astype(np.float64)

    # --- ground truth, from raw column values -------------------------------------------

    def affinity(self, user_id, item_id) -> np.ndarray:
        """Standardized shared affinity ``s`` (drives clicks, and dwell with weight rho)."""
        return self._affinity(_parse_ids(user_id, "u"), _parse_ids(item_id, "i"))

    def own_factor(self, user_id, item_id, kind: str = "separate") -> np.ndarray:
        """Standardized dwell-only factor ``o`` (independent of the click driver) of ``kind``, one
        of :data:`OWN_FACTORS`."""
        return self._own_factor(_parse_ids(user_id, "u"), _parse_ids(item_id, "i"), kind)

    def click_logit(self, user_id, item_id, hour, device, position) -> np.ndarray:
        """True click logit of impressions given their raw column values (arrays)."""
        device_index = pc.index_in(pa.array(np.asarray(device, dtype=object), pa.string()),
                                   value_set=pa.array(DEVICES)).to_numpy(zero_copy_only=False)
        return self._click_logit(_parse_ids(user_id, "u"), _parse_ids(item_id, "i"),
                                 np.asarray(hour), device_index.astype(np.int64), np.asarray(position))

    # --- sampling ---------------------------------------------------------------------

    def _distinct_items(self, rng: np.random.Generator, n_req: int) -> np.ndarray:
        """(n_req, 10) item indices drawn by popularity, distinct within a row, random order."""
        def draw(size):
            return np.minimum(np.searchsorted(self.item_cdf, rng.random(size), side="right"), self.num_items - 1)

        items = draw((n_req, ITEMS_PER_REQUEST))
        rows = np.arange(n_req)
        for _ in range(50):  # redraw repeated copies in the rows that have them
            sub = items[rows]
            order = np.argsort(sub, axis=1, kind="stable")
            ordered = np.take_along_axis(sub, order, axis=1)
            repeat = np.zeros(sub.shape, dtype=bool)
            np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
            bad = repeat.any(axis=1)
            if not bad.any():
                break
            sub[repeat] = draw(int(repeat.sum()))
            items[rows], rows = sub, rows[bad]
        return rng.permuted(items, axis=1)  # kept copies must not favour early positions


def clear_files(output_dir: str, names: re.Pattern) -> None:
    """Creates ``output_dir`` if missing and removes the files in it whose names match ``names``
    (an earlier run's), so a glob over it sees one run alone."""
    os.makedirs(output_dir, exist_ok=True)
    for name in sorted(os.listdir(output_dir)):
        if names.fullmatch(name):
            os.remove(os.path.join(output_dir, name))


def check_args(rows, seed, task_correlation, fmt, chunk_rows, corrupt_fraction, interest_weight=0.0,
               own_factor="separate") -> None:
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(rows) or rows < 1:
        raise ValueError(f"`rows` must be an int >= 1, got {rows!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0, got {seed!r}")
    if not isinstance(task_correlation, (int, float)) or not -1.0 <= task_correlation <= 1.0:
        raise ValueError(f"`task_correlation` must be in [-1, 1], got {task_correlation!r}")
    if fmt not in FORMATS:
        raise ValueError(f"`fmt` must be one of {FORMATS}, got {fmt!r}")
    if not is_int(chunk_rows) or chunk_rows < 1:
        raise ValueError(f"`chunk_rows` must be an int >= 1, got {chunk_rows!r}")
    if not isinstance(corrupt_fraction, (int, float)) or not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"`corrupt_fraction` must be in [0, 1], got {corrupt_fraction!r}")
    if not isinstance(interest_weight, (int, float)) or not 0.0 <= interest_weight <= 10.0:
        raise ValueError(f"`interest_weight` must be in [0, 10], got {interest_weight!r}")
    if own_factor not in OWN_FACTORS:
        raise ValueError(f"`own_factor` must be one of {OWN_FACTORS}, got {own_factor!r}")


def _block(world: ClicklogWorld, seed: int, block: int, total_requests: int, rows: int,
           task_correlation: float, corrupt_fraction: float, text_dirt: bool,
           interest_weight: float = 0.0, own_factor: str = "separate") -> pa.Table:
    """Impressions of requests ``[block * BLOCK_REQUESTS, ...)``, at most ``rows`` in all."""
    rng = rng_for(seed, 1, block)
    first = block * BLOCK_REQUESTS
    n_req = min(BLOCK_REQUESTS, total_requests - first)
    request = first + np.arange(n_req)
    step = max(1, SPAN_SECONDS // total_requests)

    user = np.minimum(np.searchsorted(world.user_cdf, rng.random(n_req), side="right"), world.num_users - 1)
    timestamp = START_TIMESTAMP + request * step + rng.integers(0, step, n_req)
    hour = (timestamp // 3600 + world.user_tz[user]) % 24
    other_device = rng.choice(len(DEVICES), n_req, p=DEVICE_PROBS)
    device = np.where(rng.random(n_req) < PRIMARY_DEVICE_PROB, world.user_device[user], other_device)
    item = world._distinct_items(rng, n_req).reshape(-1)

    k = ITEMS_PER_REQUEST
    u, hour_r, device_r = np.repeat(user, k), np.repeat(hour, k), np.repeat(device, k)
    position = np.tile(np.arange(1, k + 1), n_req)
    logit = world._click_logit(u, item, hour_r, device_r, position)
    if interest_weight:
        logit = logit + interest_weight * world.interest_match(u, item, np.repeat(timestamp, k))
    if own_factor == "dense":
        logit = logit + DENSE_CLICK_WEIGHT * world.dense_functions(u, item)[0]
    clicked = (rng.random(u.size) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    rho = float(task_correlation)
    drive = (rho * world._affinity(u, item)
             + math.sqrt(max(0.0, 1.0 - rho * rho)) * world._own_factor(u, item, own_factor))
    log_dwell = DWELL_LOG_MU + DWELL_SCALE * drive + DWELL_NOISE * rng.normal(0.0, 1.0, u.size)
    dwell = np.where(clicked == 1, np.maximum(np.round(np.exp(log_dwell), 1), 1.0), 0.0)

    keep = min(u.size, rows - first * k)  # the last request may be cut
    request_ids = pa.array([f"r{r:09d}" for r in request], pa.string())
    columns = {
        "request_id": request_ids.take(pa.array(np.repeat(np.arange(n_req), k)[:keep])),
        "timestamp": np.repeat(timestamp, k)[:keep],
        "user_id": u[:keep], "user_age": world.user_age[u][:keep], "device": device_r[:keep],
        "hour": hour_r[:keep], "item_id": item[:keep],
        "item_category": world.item_category[item][:keep],
        "item_price": world.item_price[item][:keep], "item_popularity": world.item_popularity[item][:keep],
        "position": position[:keep], "clicked": clicked[:keep], "dwell_seconds": dwell[:keep],
    }
    dirty = None
    if corrupt_fraction > 0.0:  # drawn last, so clean rows do not depend on the fraction
        kinds = CSV_CORRUPTION_KINDS if text_dirt else CORRUPTION_KINDS
        hit = rng.random(u.size)[:keep] < corrupt_fraction
        kind = rng.integers(0, len(kinds), u.size)[:keep]
        dirty = {name: hit & (kind == j) for j, name in enumerate(kinds)}
    return _to_table(world, columns, dirty)


_TEXT_DIRT = (("item_price", "text_price", "n/a"), ("hour", "text_hour", "noon"),
              ("position", "text_position", "top"))


def _to_table(world: ClicklogWorld, c: dict, dirty: dict | None) -> pa.Table:
    """Arrow table of one block; ``dirty`` maps each corruption kind to its row mask."""
    d = dirty or {}

    def lookup(vocab: pa.Array, index: np.ndarray, kind: str | None = None) -> pa.Array:
        return vocab.take(pa.array(index, pa.int64(), mask=d.get(kind)))

    def put(name: str, kind: str, value) -> None:
        if kind in d:
            c[name] = np.where(d[kind], value, c[name])

    put("hour", "hour_out_of_range", 27)
    put("position", "position_out_of_range", 0)
    put("user_age", "age_out_of_range", 150)
    put("item_price", "negative_price", -c["item_price"] - 1.0)
    put("item_price", "nan_price", np.nan)
    put("item_popularity", "nan_popularity", np.nan)
    put("dwell_seconds", "negative_dwell", -c["dwell_seconds"] - 1.0)
    arrays = {
        "request_id": c["request_id"],
        "timestamp": c["timestamp"],
        "user_id": lookup(world.user_ids, c["user_id"], "missing_user_id"),
        "user_age": c["user_age"],
        "device": lookup(_strings(DEVICES), c["device"], "missing_device"),
        "hour": c["hour"],
        "item_id": lookup(world.item_ids, c["item_id"], "missing_item_id"),
        "item_category": lookup(_strings(CATEGORIES), c["item_category"]),
        "item_price": c["item_price"],
        "item_popularity": c["item_popularity"],
        "position": c["position"],
        "clicked": pa.array(c["clicked"], pa.int64(), mask=d.get("missing_clicked")),
        "dwell_seconds": c["dwell_seconds"],
    }
    table = pa.table({f.name: pa.array(arrays[f.name], f.type) for f in SCHEMA})
    for name, kind, text in _TEXT_DIRT:  # CSV only: text in a numeric column
        if kind in d:
            as_text = pc.cast(table[name], pa.string())
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pc.if_else(pa.array(d[kind]), text, as_text))
    return table


def clicklog_tables(rows: int, seed: int = 0, task_correlation: float = 0.5, chunk_rows: int = 50_000,
                    corrupt_fraction: float = 0.0, text_dirt: bool = False,
                    world: ClicklogWorld | None = None, interest_weight: float = 0.0,
                    own_factor: str = "separate") -> Iterator[pa.Table]:
    """Yields the log as Arrow tables of ``chunk_rows`` rows (the last one may be shorter).

    Args:
        rows: int. Number of impressions in all.
        seed: int. Seed of the world and of the requests. Defaults to 0.
        task_correlation: float in [-1, 1]. Weight ``rho`` of the click affinity in log dwell;
            negative: conflicting drivers. Defaults to 0.5.
        chunk_rows: int. Rows per yielded table. Defaults to 50,000.
        corrupt_fraction: float in [0, 1]. Share of rows made invalid. Defaults to 0.0.
        text_dirt: bool. Also put text in numeric columns (``CSV_CORRUPTION_KINDS``); the
            tables holding such rows have string columns, so only for CSV. Defaults to False.
        world: ClicklogWorld. Defaults to ``ClicklogWorld.for_rows(rows, seed)``.
        interest_weight: float in [0, 10]. Click-logit weight of the drifting interest (see
            the module docstring); 0 (the default) leaves it out.
        own_factor: str, one of :data:`OWN_FACTORS`. The dwell-only factor: latent vectors of its
            own (``"separate"``, the default), the click's through a rotation (``"rotated"``), or a
            function of age x price conflicting with one added to the click logit (``"dense"``).
    """
    check_args(rows, seed, task_correlation, "parquet", chunk_rows, corrupt_fraction, interest_weight, own_factor)
    world = world or ClicklogWorld.for_rows(rows, seed)
    total_requests = -(-rows // ITEMS_PER_REQUEST)
    pending: list[pa.Table] = []
    pending_rows = 0
    for block in range(-(-total_requests // BLOCK_REQUESTS)):
        table = _block(world, seed, block, total_requests, rows, task_correlation, corrupt_fraction, text_dirt,
                       interest_weight, own_factor)
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= chunk_rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, chunk_rows)
            pending, pending_rows = [merged.slice(chunk_rows)], pending_rows - chunk_rows
    if pending_rows:
        yield pa.concat_tables(pending)


def generate_clicklog(output_dir: str, rows: int = 100_000, seed: int = 0, task_correlation: float = 0.5,
                      fmt: str = "parquet", chunk_rows: int = 50_000, corrupt_fraction: float = 0.0,
                      progress: Callable[[int, int], None] | None = None, interest_weight: float = 0.0,
                      own_factor: str = "separate") -> list[str]:
    """Writes the synthetic log as ``impressions-NNNNN.<fmt>`` files, one per chunk.

    Only one chunk is held in memory at a time. Files of an earlier run named
    ``impressions-NNNNN.parquet`` or ``.csv`` in ``output_dir`` are removed first, so a glob
    sees this run alone. CSV files have a header row, no quotes, and nulls as empty fields.

    Args:
        output_dir: str. Folder of the files, created if missing.
        rows: int. Number of impressions (rows) in all. Defaults to 100,000.
        seed: int. Same arguments give the same data. Defaults to 0.
        task_correlation: float in [-1, 1]. How much the click affinity drives dwell time;
            negative: it shortens it (conflicting drivers). Defaults to 0.5.
        fmt: str. ``"parquet"`` or ``"csv"``. Defaults to ``"parquet"``.
        chunk_rows: int. Rows per file; does not change the data. Defaults to 50,000.
        corrupt_fraction: float in [0, 1]. Share of rows made invalid (see the module
            docstring). Defaults to 0.0.
        progress: callable ``(rows_done, rows_total)`` called after each file. Defaults to None.
        interest_weight: float in [0, 10]. Weight of the drifting interest (module docstring);
            0 (the default) leaves it out.
        own_factor: str, one of :data:`OWN_FACTORS` (module docstring). Defaults to ``"separate"``.

    Returns:
        list of str: paths of the files written, in order.
    """
    check_args(rows, seed, task_correlation, fmt, chunk_rows, corrupt_fraction, interest_weight, own_factor)
    clear_files(output_dir, _FILE_PATTERN)
    paths, done = [], 0
    tables = clicklog_tables(rows, seed, task_correlation, chunk_rows, corrupt_fraction, text_dirt=fmt == "csv",
                             interest_weight=interest_weight, own_factor=own_factor)
    for index, table in enumerate(tables):
        path = os.path.join(output_dir, f"impressions-{index:05d}.{fmt}")
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            with open(path, "wb") as f:
                f.write((",".join(table.column_names) + "\n").encode())
                pa_csv.write_csv(table, f, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
        paths.append(path)
        done += table.num_rows
        if progress is not None:
            progress(done, rows)
    return paths
