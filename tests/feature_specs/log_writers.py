"""Small raw logs written for the tests of `mmoe spec infer` and `mmoe spec check`."""

from __future__ import annotations

import csv
import json


def write_csv(path, rows: list[dict]) -> str:
    """Writes ``rows`` (dicts with the same keys) as a CSV file with a header line; returns the path."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def write_jsonl(path, rows: list[dict]) -> str:
    """Writes ``rows`` as JSON lines, one object a line; returns the path."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)
