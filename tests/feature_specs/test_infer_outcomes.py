"""`mmoe spec infer` on an impression log with outcome columns beside the labels
(feature_specs/outcomes.py): each is left out with its reason, listed, and kept only when asked;
`mmoe spec check` warns of the same columns in a hand-written spec."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from feature_specs.check import check_report, check_spec
from feature_specs.infer import InferError, infer_spec
from feature_specs.spec_reader import spec_from_dict
from log_writers import write_csv
from mmoe_cli.main import main
from outcome_logs import FEATURES, LISTS, OUTCOMES, TIME, short_video_rows

LABELS = {"click": "click", "engagement": "dwell_seconds"}


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> str:
    return write_csv(tmp_path_factory.mktemp("short_video") / "impressions.csv", short_video_rows())


@pytest.fixture(scope="module")
def inferred(short_video):
    return infer_spec(short_video, LABELS, group_by="request_id")


def test_every_outcome_column_is_left_out_with_its_reason(inferred):
    for name in OUTCOMES:
        choice = inferred.choice(name)
        assert choice.role == "excluded" and choice.flag in ("outcome", "leak"), (name, choice.reason)
        assert any(label in choice.reason for label in LABELS.values()), choice.reason
    assert [c.name for c in inferred.label_candidates] == list(OUTCOMES)
    features = {f.name for f in inferred.spec.features}
    assert features == set(FEATURES) | set(LISTS)
    assert not {c.name for c in inferred.spec.all_columns} & set(OUTCOMES)


def test_the_reasons_say_how_each_outcome_gives_itself_away(inferred):
    reasons = {name: inferred.choice(name).reason for name in OUTCOMES}
    for name in ("like", "follow", "long_view", "profile_time"):  # set almost only in clicked rows
        assert "where click is positive" in reasons[name], reasons[name]
    assert "a 0/1 column set in" in reasons["comment"] and "click is positive" in reasons["comment"]
    assert "a duration (by its name)" in reasons["play_time"]
    assert "--keep-feature like" in reasons["like"] and "--label TASK=like" in reasons["like"]
    assert "--keep-feature watch_ratio keeps it" in reasons["watch_ratio"]


def test_outcomes_are_written_as_left_out_comments_and_listed_in_the_summary(inferred):
    comments = [line for line in inferred.yaml.splitlines() if line.startswith("# ")]
    for name in OUTCOMES:
        assert any(line.startswith(f"# {name} (") for line in comments), name
    summary = inferred.summary()
    for name in OUTCOMES:
        assert any(line.startswith(f"left out {name} (") for line in summary), name
    assert any(line.startswith("list feature tags: a list of ints (strings joined by ','") for line in summary)
    assert any(line.startswith("split: time cut on ts_ms") for line in summary)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_judgement_holds_on_other_draws_of_the_log(tmp_path, seed):
    inferred = infer_spec(write_csv(tmp_path / "log.csv", short_video_rows(seed=seed)), LABELS, group_by="request_id")
    kinds = {c.name: c.flag or c.role for c in inferred.choices}
    assert {n: kinds[n] for n in OUTCOMES if kinds[n] not in ("outcome", "leak")} == {}
    assert {n for n in FEATURES if kinds[n] != "feature"} == set()
    assert {n: kinds[n] for n in TIME} == TIME and all(kinds[n] == "feature" for n in LISTS)


def test_keep_feature_keeps_a_named_outcome_and_says_so(short_video):
    inferred = infer_spec(short_video, LABELS, group_by="request_id", keep_features=["follow", "watch_ratio"])
    for name, flag in (("follow", "outcome"), ("watch_ratio", "leak")):
        choice = inferred.choice(name)
        assert choice.role == "feature" and choice.reason.startswith(f"kept as a feature by --keep-feature although "
                                                                     f"flagged {flag}")
        assert name in {f.name for f in inferred.spec.features}
    assert "like" not in {f.name for f in inferred.spec.features}


def test_keep_feature_cannot_override_time_ids_or_lists(short_video):
    with pytest.raises(InferError, match=r"--keep-feature ts_ms: the column is left out as timestamp"):
        infer_spec(short_video, LABELS, group_by="request_id", keep_features=["ts_ms"])
    with pytest.raises(InferError, match=r"--keep-feature 'likes' is not a column \(did you mean 'like'\?\)"):
        infer_spec(short_video, LABELS, keep_features=["likes"])
    with pytest.raises(InferError, match="--keep-feature 'click' is a label"):
        infer_spec(short_video, LABELS, keep_features=["click"])


def test_an_outcome_of_the_second_label_is_caught_too(tmp_path):
    rng = np.random.default_rng(4)
    rows = []
    for i in range(2000):
        clicked, bought = int(rng.random() < 0.3), int(rng.random() < 0.1)  # not gated on the click
        rows.append({"user": f"u{rng.integers(50)}", "price": round(float(rng.uniform(1, 99)), 2),
                     "refund_amount": round(float(rng.uniform(1, 50)), 2) if bought and rng.random() < 0.4 else 0.0,
                     "clicked": clicked, "bought": bought})
    inferred = infer_spec(write_csv(tmp_path / "shop.csv", rows), {"click": "clicked", "purchase": "bought"})
    choice = inferred.choice("refund_amount")
    assert choice.flag == "outcome" and "where bought is positive" in choice.reason
    assert {f.name for f in inferred.spec.features} == {"user", "price"}


def test_an_outcome_left_blank_where_it_did_not_happen_is_an_outcome_not_an_empty_column(tmp_path):
    rows = short_video_rows(n=2000, seed=6)
    for row in rows:
        row["profile_time"] = row["profile_time"] or ""  # most rows blank: only visits are logged
    inferred = infer_spec(write_csv(tmp_path / "blank.csv", rows), LABELS)
    choice = inferred.choice("profile_time")
    assert choice.flag == "outcome" and "where click is positive" in choice.reason


def test_genuine_features_near_the_thresholds_stay(tmp_path):
    # a rare 0/1 feature with a real but modest effect, a length known in advance, a past average
    rows = short_video_rows(seed=5)
    inferred = infer_spec(write_csv(tmp_path / "log.csv", rows), LABELS)
    for name in ("is_new_user", "video_duration", "user_avg_watch_time"):
        assert inferred.choice(name).role == "feature", inferred.choice(name).reason


def test_cli_lists_the_left_out_outcomes_on_stderr_and_keeps_one_when_asked(short_video, capsys):
    assert main(["spec", "infer", short_video, "--label", "click=click", "--label", "engagement=dwell_seconds",
                 "--group-by", "request_id", "--keep-feature", "comment"]) == 0
    captured = capsys.readouterr()
    spec = spec_from_dict(yaml.safe_load(captured.out))
    assert "comment" in {f.name for f in spec.features} and "like" not in {f.name for f in spec.features}
    assert "mmoe spec infer: left out like (outcome): non-zero in" in captured.err
    assert "left out comment" not in captured.err


# -- mmoe spec check on a hand-written spec -----------------------------------------------------

HAND_WRITTEN = """
name: short_video
features:
  - {name: user_id, type: string, transform: vocabulary}
  - {name: like, type: int, transform: vocabulary}
  - {name: watch_ratio, type: float, transform: zscore}
  - {name: video_duration, type: float, transform: zscore}
columns:
  - {name: request_id, type: string}
  - {name: click, type: int, min: 0, max: 1}
  - {name: dwell_seconds, type: float, min: 0}
tasks:
  - {name: click, label: click, kind: binary}
  - {name: engagement, label: dwell_seconds, kind: regression, mask: click}
ranking: {group_by: request_id, kind: product, weights: {click: 1.0, engagement: 1.0}}
split: {method: hash, key: request_id}
"""


def test_spec_check_warns_of_a_near_perfect_predictor_in_a_hand_written_spec(short_video, tmp_path):
    spec_path = tmp_path / "hand.yaml"
    spec_path.write_text(HAND_WRITTEN)
    problems, warnings = check_report(str(spec_path), short_video)
    assert problems == [] and check_spec(str(spec_path), short_video) == []
    by_column = {w.column: str(w) for w in warnings}
    assert set(by_column) == {"like", "watch_ratio"}
    assert by_column["watch_ratio"].startswith("features[2] watch_ratio: its non-zero correlates 1.000 with the label click")
    assert by_column["like"].startswith("features[1] like: non-zero in") and "where click is positive" in by_column["like"]


def test_spec_check_prints_the_warning_and_still_passes(short_video, tmp_path, capsys):
    spec_path = tmp_path / "hand.yaml"
    spec_path.write_text(HAND_WRITTEN)
    assert main(["spec", "check", str(spec_path), short_video]) == 0
    captured = capsys.readouterr()
    assert "mmoe spec check: warning: features[2] watch_ratio: its non-zero correlates 1.000" in captured.err
    assert "valid and" in captured.out
