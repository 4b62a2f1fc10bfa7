"""A short-video impression log as they come: labels, the other outcomes beside them, and time.

One row per shown video, 8 per request. ``click`` and ``dwell_seconds`` (only where clicked) are
the labels; the outcome columns are derived from them with noise, as a real log records them
after the impression; the rest are features known at ranking time, including a 0/1 feature, a
duration known beforehand (``video_duration``) and a user's past average.
"""

from __future__ import annotations

import datetime

import numpy as np

START_MS = 1_709_251_200_000  # 2024-03-01 00:00 UTC
DAYS = 7
PER_REQUEST = 8

# what each column is; the tests check that inference says the same
OUTCOMES = ("like", "follow", "comment", "long_view", "profile_time", "play_time", "watch_ratio")
FEATURES = ("user_id", "video_id", "video_category", "author_followers", "video_duration", "hour", "device",
            "is_new_user", "user_avg_watch_time")
TIME = {"ts_ms": "timestamp", "date": "date"}
LISTS = ("tags",)


def short_video_rows(n: int = 4000, seed: int = 0) -> list[dict]:
    """``n`` impressions in requests of :data:`PER_REQUEST`, over :data:`DAYS` days, in time order."""
    rng = np.random.default_rng(seed)
    requests = n // PER_REQUEST + 1
    request_ms = np.sort(START_MS + rng.integers(0, DAYS * 86_400_000, requests))
    users, videos, categories = 200, 500, 12
    taste = rng.normal(0, 1, (users, categories))
    video_category = rng.integers(0, categories, videos)
    followers = np.round(np.exp(rng.normal(8, 2, videos)))
    duration = np.round(rng.uniform(5, 300, videos), 1)
    user_watch = np.round(np.exp(rng.normal(3, 0.5, users)), 1)
    new_user = rng.random(users) < 0.05
    user_of_request = rng.integers(0, users, requests)
    rows = []
    for i in range(n):
        r = i // PER_REQUEST
        user, video = int(user_of_request[r]), int(rng.integers(videos))
        ms = int(request_ms[r])
        moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
        logit = -1.6 + 0.9 * taste[user, video_category[video]] + 0.25 * new_user[user] + 0.05 * np.log1p(followers[video])
        click = int(rng.random() < 1 / (1 + np.exp(-logit)))
        dwell = round(float(np.exp(rng.normal(3.2, 0.9)) * (0.5 + duration[video] / 300)), 1) if click else 0.0
        noise = rng.random(5)
        tags = rng.choice(40, size=int(rng.integers(1, 4)), replace=False)
        rows.append({
            "request_id": f"r{r}",
            "ts_ms": ms,
            "date": int(moment.strftime("%Y%m%d")),
            "user_id": f"u{user}",
            "video_id": f"v{video}",
            "video_category": int(video_category[video]),
            "tags": ",".join(str(t) for t in tags),
            "author_followers": float(followers[video]),
            "video_duration": float(duration[video]),
            "hour": moment.hour,
            "device": ("ios", "android", "web")[int(rng.integers(3))],
            "is_new_user": int(new_user[user]),
            "user_avg_watch_time": float(user_watch[user]),
            "click": click,
            "dwell_seconds": dwell,
            # outcomes: recorded after the impression, from the labels with noise
            "like": int(noise[0] < (0.3 if click else 0.003)),
            "follow": int(noise[1] < (0.05 if click else 0.001)),
            "comment": int(noise[2] < (0.08 if click else 0.006)),
            "long_view": int(dwell > 45 and noise[3] > 0.02),
            "profile_time": round(float(np.exp(rng.normal(2, 1))), 1) if click and noise[4] < 0.2 else 0.0,
            "play_time": round(float(rng.uniform(0, 15)) + 0.5 * dwell * float(rng.random()), 1),  # autoplay too
            "watch_ratio": round(dwell / duration[video], 3),
        })
    return rows
