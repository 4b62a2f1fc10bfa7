"""MovieLens ``ml-latest-small`` -> the time-ordered CSV that ``feature_specs/movielens.yaml`` reads.

MovieLens is a rating log, not an impression log: every row is a movie a user chose to rate.
:func:`convert` joins ``ratings.csv`` (userId, movieId, rating, timestamp) with ``movies.csv``
(movieId, title, genres) and writes one row per rating in time order, with

- ids: ``user_id``, ``movie_id`` (strings, for vocabularies);
- movie attributes from ``movies.csv``: ``genre`` (the first listed genre), ``genre_count``,
  ``year`` (from the title's trailing ``(YYYY)``; ``0`` where there is none) and one 0/1
  column ``genre_<name>`` per genre of :data:`GENRES` (multi-hot);
- context computed only from **strictly earlier** ratings (an earlier timestamp; ratings that
  share a timestamp, as bulk imports do, never see each other): the user's and the movie's
  earlier rating counts, their smoothed earlier mean ratings and the user's earlier like rate
  (shrunk towards :data:`PRIOR_RATING` / :data:`PRIOR_LIKE` with weight :data:`PRIOR_WEIGHT`,
  constants of the rating scale rather than of the data, so nothing leaks from later rows);
- the tasks' labels: ``like`` (0/1, ``rating >= 4``, the usual "relevant" threshold of
  MovieLens evaluations) and ``stars`` (the rating, 0.5–5.0; the spec's ``rating`` task learns
  it: a column must not share its name with a regression task's served output);
- ``timestamp`` (Unix seconds), the key of the spec's time-cut split.

Why these two tasks: rating prediction (regression) and relevance prediction (binary) are the
pair MovieLens multi-task and recommender papers report; they come from one signal, so they are
strongly related tasks, the setting where sharing (an MMoE, a shared bottom) should help most.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from typing import Iterable, Iterator

from feature_specs.errors import UserError

DEFAULT_DATA = "/work/shared/data/movielens-latest-small"
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
NO_GENRE = "(no genres listed)"
LIKE_THRESHOLD = 4.0  # like = rating >= 4
PRIOR_RATING = 3.0  # smoothing prior of the earlier mean ratings: the middle of the 1-5 star scale
PRIOR_LIKE = 0.5  # smoothing prior of the earlier like rate
PRIOR_WEIGHT = 5.0  # pseudo-ratings the priors count as
YEAR = re.compile(r"\((\d{4})\)\s*$")

def genre_column(name: str) -> str:
    """``"Sci-Fi"`` -> ``"genre_sci_fi"``."""
    return f"genre_{name.lower().replace('-', '_')}"


CONTEXT_COLUMNS = ("user_prior_count", "user_prior_mean", "user_prior_like_rate", "movie_prior_count",
                   "movie_prior_mean")
OUTPUT_COLUMNS = (
    ("user_id", "movie_id", "genre", "genre_count", "year")
    + tuple(genre_column(name) for name in GENRES)
    + CONTEXT_COLUMNS + ("like", "stars", "timestamp")
)


class MovieLensError(UserError, ValueError):
    """A MovieLens file that cannot be read: names the file and line."""


def _records(path: str, fields: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in fields if f not in (reader.fieldnames or ())]
        if missing:
            raise MovieLensError(f"{path}: no column {missing[0]!r} in the header {reader.fieldnames}")
        for line, record in enumerate(reader, start=2):
            yield line, record


def read_movies(path: str) -> dict[str, dict]:
    """``movies.csv`` -> ``{movieId: {"genre", "genre_count", "year", "genre_<name>"...}}``.

    Raises:
        MovieLensError: a missing column (named with the file).
    """
    movies = {}
    for _, record in _records(path, ("movieId", "title", "genres")):
        genres = [] if record["genres"] in ("", NO_GENRE) else record["genres"].split("|")
        year = YEAR.search(record["title"].strip())
        attributes = {"genre": genres[0] if genres else NO_GENRE, "genre_count": len(genres),
                      "year": int(year.group(1)) if year else 0}
        attributes.update({genre_column(name): int(name in genres) for name in GENRES})
        movies[record["movieId"]] = attributes
    return movies


def read_ratings(path: str, limit_users: int | None = None) -> list[tuple[int, str, str, float]]:
    """``ratings.csv`` -> ``[(timestamp, userId, movieId, rating)]`` in time order (ties by user, movie).

    Args:
        limit_users: keep only the ratings of the first N user ids (ascending), for samples.

    Raises:
        MovieLensError: naming the file and line of a rating or timestamp that is not a number.
    """
    ratings = []
    for line, record in _records(path, ("userId", "movieId", "rating", "timestamp")):
        try:
            row = (int(record["timestamp"]), record["userId"], record["movieId"], float(record["rating"]))
        except (TypeError, ValueError):
            raise MovieLensError(f"{path}, line {line}: rating {record['rating']!r} / timestamp "
                                 f"{record['timestamp']!r} is not a number") from None
        ratings.append(row)
    if limit_users is not None:
        kept = set(sorted({r[1] for r in ratings}, key=int)[:limit_users])
        ratings = [r for r in ratings if r[1] in kept]
    ratings.sort(key=lambda r: (r[0], int(r[1]), int(r[2])))
    return ratings


def _smoothed(total: float, count: int, prior: float) -> float:
    return (total + prior * PRIOR_WEIGHT) / (count + PRIOR_WEIGHT)


def log_rows(ratings: Iterable[tuple[int, str, str, float]], movies: dict[str, dict]) -> Iterator[dict]:
    """One output row per rating, in the given (time) order, with the earlier-rows context.

    Args:
        ratings: ``(timestamp, userId, movieId, rating)`` sorted by timestamp.
        movies: :func:`read_movies`'s dict; a rated movie missing from it raises.

    Raises:
        MovieLensError: a rated movie that ``movies.csv`` does not list, or ratings out of time order.
    """
    user = defaultdict(lambda: [0, 0.0, 0])  # count, rating sum, likes of strictly earlier ratings
    movie = defaultdict(lambda: [0, 0.0])
    pending: list[tuple[str, str, float]] = []  # this timestamp's ratings, applied once it has passed
    current = None
    for timestamp, user_id, movie_id, rating in ratings:
        if current is not None and timestamp < current:
            raise MovieLensError(f"ratings out of time order: {timestamp} after {current}")
        if timestamp != current:
            for u, m, r in pending:
                user[u][0] += 1
                user[u][1] += r
                user[u][2] += int(r >= LIKE_THRESHOLD)
                movie[m][0] += 1
                movie[m][1] += r
            pending, current = [], timestamp
        if movie_id not in movies:
            raise MovieLensError(f"movieId {movie_id} (rated by user {user_id}) is not in movies.csv")
        u, m = user[user_id], movie[movie_id]
        yield {
            "user_id": user_id, "movie_id": movie_id, **movies[movie_id],
            "user_prior_count": u[0], "user_prior_mean": round(_smoothed(u[1], u[0], PRIOR_RATING), 4),
            "user_prior_like_rate": round(_smoothed(u[2], u[0], PRIOR_LIKE), 4),
            "movie_prior_count": m[0], "movie_prior_mean": round(_smoothed(m[1], m[0], PRIOR_RATING), 4),
            "like": int(rating >= LIKE_THRESHOLD), "stars": rating, "timestamp": timestamp,
        }
        pending.append((user_id, movie_id, rating))


def convert(source: str, destination: str, limit_users: int | None = None) -> int:
    """Writes the CSV the MovieLens spec reads from the folder ``source``; returns the rows written.

    Args:
        source: a folder with ``ratings.csv`` and ``movies.csv`` (ml-latest-small's layout).
        destination: the CSV to write.
        limit_users: only the first N users' ratings (samples and quick looks).
    """
    movies = read_movies(os.path.join(source, "movies.csv"))
    ratings = read_ratings(os.path.join(source, "ratings.csv"), limit_users)
    count = 0
    with open(destination, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=OUTPUT_COLUMNS)
        writer.writeheader()
        for row in log_rows(ratings, movies):
            writer.writerow(row)
            count += 1
    return count


def time_quantile(path: str, fraction: float) -> int:
    """The timestamp at ``fraction`` of the way through the written CSV's rows (they are in time order)."""
    with open(path, encoding="utf-8", newline="") as handle:
        stamps = [int(row["timestamp"]) for row in csv.DictReader(handle)]
    return stamps[min(len(stamps) - 1, int(fraction * len(stamps)))]
