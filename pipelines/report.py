"""The run report: row counts computed inside the pipeline, checked and assembled afterwards.

The pipeline counts with Beam combiners and writes one JSON element (``Workdir.counts_prefix``
+ ``.json``); after it finishes, :func:`build_report` turns the counts into ``report.json`` and
checks that every input row is accounted for: ``input_rows == written + rejected``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import apache_beam as beam

from pipelines.records import REASONS

COUNTS_SUFFIX = ".json"


class ReconciliationError(RuntimeError):
    """Input rows do not equal written plus rejected rows: some rows were lost or duplicated."""


def counts_from_parts(parts):
    """Folds tagged ``(kind, key, count)`` parts into the counts document."""
    counts = {"input_rows": 0, "written": {"train": 0, "eval": 0}, "rejected_by_reason": {},
              "rejected_by_field": {}}
    for kind, key, count in parts:
        if kind == "input_rows":
            counts["input_rows"] = count
        elif kind == "written":
            counts["written"][key] = count
        elif kind == "by_reason":
            counts["rejected_by_reason"][key] = count
        elif kind == "by_field":
            counts["rejected_by_field"][key] = count
    return counts


class CountRows(beam.PTransform):
    """Counts input, rejected (per reason and per field) and written rows with Beam combiners.

    Applied to a dict of PCollections with keys ``input``, ``rejected``, ``train`` and ``eval``.

    Returns (from ``expand``):
        A single counts dict (see :func:`counts_from_parts`).
    """

    def expand(self, pcolls):
        rejected = pcolls["rejected"]
        parts = (
            pcolls["input"]
            | "CountInput" >> beam.combiners.Count.Globally()
            | "TagInput" >> beam.Map(lambda n: ("input_rows", None, n)),
            pcolls["train"]
            | "CountTrain" >> beam.combiners.Count.Globally()
            | "TagTrain" >> beam.Map(lambda n: ("written", "train", n)),
            pcolls["eval"]
            | "CountEval" >> beam.combiners.Count.Globally()
            | "TagEval" >> beam.Map(lambda n: ("written", "eval", n)),
            rejected
            | "Reasons" >> beam.Map(lambda r: r.reason)
            | "CountReasons" >> beam.combiners.Count.PerElement()
            | "TagReasons" >> beam.MapTuple(lambda reason, n: ("by_reason", reason, n)),
            rejected
            | "Fields" >> beam.FlatMap(lambda r: [] if r.field is None else [r.field])
            | "CountFields" >> beam.combiners.Count.PerElement()
            | "TagFields" >> beam.MapTuple(lambda field, n: ("by_field", field, n)),
        )
        return (
            parts
            | "Parts" >> beam.Flatten()
            | "Gather" >> beam.combiners.ToList()
            | "Assemble" >> beam.Map(counts_from_parts)
        )


def counts_json(counts: Mapping[str, Any]) -> str:
    return json.dumps(counts, indent=2, sort_keys=True)


def build_report(counts: Mapping[str, Any], spec_name: str, input_pattern: str, seconds: float) -> dict:
    """Assembles ``report.json`` from the pipeline's counts.

    Args:
        counts: the counts document written by :class:`CountRows`.
        spec_name: str. The spec's name.
        input_pattern: str. The input file pattern.
        seconds: float. Wall time of the run.

    Returns:
        ``{"input_rows", "written": {"train", "eval", "total"}, "rejected": {"total",
        "by_reason", "by_field"}, "reject_rate", "reconciled", "spec", "input", "seconds"}``.
        ``by_reason`` lists every reason, zeros included.
    """
    input_rows = int(counts["input_rows"])
    train, eval_ = int(counts["written"]["train"]), int(counts["written"]["eval"])
    by_reason = {reason: 0 for reason in REASONS}
    by_reason.update({k: int(v) for k, v in counts["rejected_by_reason"].items()})
    rejected = sum(by_reason.values())
    return {
        "input_rows": input_rows,
        "written": {"train": train, "eval": eval_, "total": train + eval_},
        "rejected": {
            "total": rejected,
            "by_reason": by_reason,
            "by_field": dict(sorted((k, int(v)) for k, v in counts["rejected_by_field"].items())),
        },
        "reject_rate": rejected / input_rows if input_rows else 0.0,
        "reconciled": input_rows == train + eval_ + rejected,
        "spec": spec_name,
        "input": input_pattern,
        "seconds": round(seconds, 3),
    }


def check_reconciled(report: Mapping[str, Any]) -> None:
    """Raises :class:`ReconciliationError` unless input rows equal written plus rejected rows."""
    if not report["reconciled"]:
        raise ReconciliationError(
            f"row counts do not reconcile: {report['input_rows']} input rows, but "
            f"{report['written']['total']} written + {report['rejected']['total']} rejected")


def format_table(report: Mapping[str, Any]) -> str:
    """A short human-readable table of a report's counts."""
    lines = [("input rows", report["input_rows"]),
             ("written train", report["written"]["train"]),
             ("written eval", report["written"]["eval"]),
             ("rejected", report["rejected"]["total"])]
    lines += [(f"  {reason}", n) for reason, n in report["rejected"]["by_reason"].items() if n]
    lines += [(f"  field {field}", n) for field, n in report["rejected"]["by_field"].items()]
    width = max(len(label) for label, _ in lines)
    rows = [f"{label:<{width}}  {value:>10,}" for label, value in lines]
    rows.append(f"{'reject rate':<{width}}  {report['reject_rate']:>10.2%}")
    rows.append(f"{'reconciled':<{width}}  {'yes' if report['reconciled'] else 'NO':>10}")
    return "\n".join(rows)
