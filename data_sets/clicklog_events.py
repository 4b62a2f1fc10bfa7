"""The clicklog as a label join consumes it: impressions without labels, click and dwell event logs.

Same impressions as :func:`data_sets.clicklog.generate_clicklog`; the events carry the labels, so
joined by ``impression_id`` (the spec's ``sources:`` section) they give back the clicklog's labels.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_sets.clicklog import check_args, clear_files, clicklog_tables, rng_for

_EVENT_FILE_PATTERN = re.compile(r"(impressions-\d{5}\.parquet|(clicks|dwell)-\d{5}\.jsonl)")


def generate_clicklog_events(output_dir: str, rows: int = 100_000, seed: int = 0, task_correlation: float = 0.5,
                             chunk_rows: int = 50_000, orphan_fraction: float = 0.0,
                             late_fraction: float = 0.0) -> dict[str, list[str]]:
    """Writes the clicklog as an impression log without labels plus click and dwell event logs.

    The same impressions as :func:`generate_clicklog` (same arguments, same rows), in the form a
    label join consumes (the spec's ``sources:`` section, keyed by ``impression_id``):

    * ``impressions-NNNNN.parquet``: every column but ``clicked`` and ``dwell_seconds``, plus
      ``impression_id`` (``<request_id>-<position>``, unique);
    * ``clicks-NNNNN.jsonl``: ``{"impression_id", "timestamp"}`` per clicked impression, 1..120 s
      after it;
    * ``dwell-NNNNN.jsonl``: ``{"impression_id", "timestamp", "seconds"}`` per clicked impression,
      when the dwell ends (at most 600 s after the click).

    Joined with a window of at least 720 s (click: ``flag``, dwell: ``sum`` of ``seconds``), the
    labels equal the clicklog's ``clicked`` and ``dwell_seconds`` exactly, except for the
    ``late_fraction`` of clicks (and their dwell events) moved 2 days later, outside any
    reasonable window. ``orphan_fraction`` adds that share of extra click events whose
    impression id matches no impression.

    Args:
        output_dir: str. Folder of the files, created if missing; earlier files of this
            function there are removed first.
        rows: int. Impressions in all. Defaults to 100,000.
        seed: int. Same arguments give the same files. Defaults to 0.
        task_correlation: float in [-1, 1]. As in :func:`generate_clicklog`.
        chunk_rows: int. Impressions per file (one click and one dwell file per chunk).
        orphan_fraction: float in [0, 1]. Extra clicks without an impression, per row.
        late_fraction: float in [0, 1]. Share of clicks logged outside the attribution window.

    Returns:
        ``{"impressions": [...], "clicks": [...], "dwell": [...]}``: the paths written.
    """
    for name, value in (("orphan_fraction", orphan_fraction), ("late_fraction", late_fraction)):
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {value!r}")
    check_args(rows, seed, task_correlation, "parquet", chunk_rows, 0.0)
    clear_files(output_dir, _EVENT_FILE_PATTERN)
    paths: dict[str, list[str]] = {"impressions": [], "clicks": [], "dwell": []}
    tables = clicklog_tables(rows, seed, task_correlation, chunk_rows, 0.0)
    for index, table in enumerate(tables):
        rng = rng_for(seed, 7919, index)
        ids = pc.binary_join_element_wise(table["request_id"], pc.cast(table["position"], pa.string()), "-")
        impressions = table.drop_columns(["clicked", "dwell_seconds"]).append_column("impression_id", ids)
        path = os.path.join(output_dir, f"impressions-{index:05d}.parquet")
        pq.write_table(impressions, path)
        paths["impressions"].append(path)
        clicked = table["clicked"].to_numpy() == 1
        shown = table["timestamp"].to_numpy()[clicked]
        seconds = table["dwell_seconds"].to_numpy()[clicked]
        click_ids = np.asarray(ids.to_pylist(), dtype=object)[clicked]
        click_at = shown + rng.integers(1, 121, size=shown.size)
        late = rng.random(shown.size) < late_fraction
        click_at = np.where(late, click_at + 2 * 86_400, click_at)
        dwell_at = click_at + np.minimum(np.ceil(seconds), 600).astype(np.int64)
        clicks = [{"impression_id": i, "timestamp": int(t)} for i, t in zip(click_ids, click_at)]
        orphans = int(rng.binomial(table.num_rows, orphan_fraction)) if orphan_fraction else 0
        clicks += [{"impression_id": f"orphan-{index}-{k}", "timestamp": int(shown[0] if shown.size else 0)}
                   for k in range(orphans)]
        dwell = [{"impression_id": i, "timestamp": int(t), "seconds": float(s)}
                 for i, t, s in zip(click_ids, dwell_at, seconds)]
        for kind, events in (("clicks", clicks), ("dwell", dwell)):
            path = os.path.join(output_dir, f"{kind}-{index:05d}.jsonl")
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(event) + "\n" for event in events)
            paths[kind].append(path)
    return paths
