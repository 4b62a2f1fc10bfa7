"""`mmoe spec infer` proposes ID dropout (``oov_dropout``, feature_specs/oov_choices.py) for the ID
features of a time-split log whose evaluated rows hold values training never saw, and only there."""

from __future__ import annotations

import numpy as np
import pytest

from feature_specs.infer import infer_spec
from feature_specs.oov_choices import OOV_DROPOUT_MAX, proposed_rate, unseen_share
from log_writers import write_csv

START = 1_700_000_000


def log_rows(rows: int, new_user_share: float, seed: int = 0) -> list[dict]:
    """Rows in time order over 10 days; users 0..149 throughout; in the last 2 days (the eval
    side of a 20% cut) ``new_user_share`` of the rows come from users first seen there. Items
    recur on both sides."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        late = i >= 0.8 * rows
        user = (1000 + i if late and rng.random() < new_user_share else int(rng.integers(0, 150)))
        out.append({"user": f"u{user}", "item": f"i{rng.integers(0, 80)}", "device": ["ios", "web"][i % 2],
                    "ts": START + 864 * i * 1000 // rows, "clicked": int(rng.random() < 0.3)})
    return out


def test_unseen_share_and_the_proposed_rate():
    assert unseen_share(["a", "b", None], ["a", "c", None, "d"]) == pytest.approx(2 / 3)
    assert unseen_share(["a"], [None]) == 0.0
    assert [proposed_rate(s) for s in (0.0, 0.04, 0.05, 0.16, 0.42, 0.92)] == [0.0, 0.0, 0.05, 0.15, 0.4,
                                                                                OOV_DROPOUT_MAX]


def test_new_users_after_the_cut_get_their_share_of_dropout_read_from_the_whole_log(tmp_path):
    path = write_csv(tmp_path / "log.csv", log_rows(2000, new_user_share=0.3))
    inferred = infer_spec(path, {"click": "clicked"}, max_rows=1000)  # the sample: the first half, all before the cut
    assert inferred.spec.split.method == "timestamp"
    features = {f.name: f for f in inferred.spec.features}
    assert features["user"].oov_dropout == 0.3
    assert "oov_dropout 0.3: 30% of the eval rows hold a value no train row holds" in inferred.choice("user").reason
    assert "oov_dropout: 0.3" in inferred.yaml
    assert features["item"].oov_dropout == 0.0  # every item recurs
    assert features["device"].oov_dropout == 0.0  # a handful of codes is not measured
    assert "oov_dropout" not in inferred.choice("item").reason


def test_a_hash_split_or_recurring_users_get_none(tmp_path):
    recurring = write_csv(tmp_path / "recurring.csv", log_rows(2000, new_user_share=0.0))
    assert all(f.oov_dropout == 0.0 for f in infer_spec(recurring, {"click": "clicked"}).spec.features)
    no_time = [{k: v for k, v in row.items() if k != "ts"} for row in log_rows(2000, new_user_share=0.3)]
    hashed = infer_spec(write_csv(tmp_path / "no_time.csv", no_time), {"click": "clicked"})
    assert hashed.spec.split.method == "hash"
    assert all(f.oov_dropout == 0.0 for f in hashed.spec.features)
